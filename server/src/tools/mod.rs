//! Tools the model may call, each with its approval policy: the server's own (clock,
//! calculator, the file tools) in a registry, and the external tools a context declares.

mod calculator;
mod clock;
mod external;
mod list_dir;
mod read_file;
mod registry;
mod schema;
mod schema_bounds;
mod tool;
mod workspace;
mod write_file;

pub use calculator::Calculator;
pub use clock::Clock;
pub use external::{ExternalTools, NO_EXTERNAL_RESULT};
pub use list_dir::ListDir;
pub use read_file::ReadFile;
pub use registry::{InvalidTool, TIMED_OUT, ToolLimits, ToolRegistry, truncate};
pub use schema::ArgumentSchema;
pub use schema_bounds::SchemaBounds;
pub use tool::{Tool, ToolError};
pub use workspace::Workspace;
pub use write_file::WriteFile;
