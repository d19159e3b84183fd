//! Every runtime error as the gRPC status a client gets.

use tonic::{Code, Status};

use crate::domain::ForkError;
use crate::fsm::Rejection;
use crate::runtime::Error;
use crate::store;

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let code = match &error {
            Error::NotFound(_) | Error::UnknownMessage { .. } => Code::NotFound,
            Error::Rejected(rejection) if rejection.is_not_found() => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::Rejected(Rejection::StaleRevision { .. }) => Code::Aborted,
            Error::Rejected(rejection) if rejection.is_invalid_argument() => Code::InvalidArgument,
            Error::Rejected(_) => Code::FailedPrecondition,
            Error::Fork(ForkError::UnknownMessage { .. }) => Code::NotFound,
            Error::Fork(_) => Code::FailedPrecondition,
            Error::Storage(store::Error::Corrupt(_)) => Code::DataLoss,
            Error::Storage(store::Error::Conflict { .. }) => Code::Aborted,
            Error::Storage(_)
            | Error::ShuttingDown
            | Error::Stopped { .. }
            | Error::Unloaded
            | Error::Elsewhere { .. }
            | Error::NotHere(_) => Code::Unavailable,
            Error::Overloaded(_) | Error::TooManyRuns { .. } | Error::TooManyContexts { .. } => Code::ResourceExhausted,
            Error::DeadlineExceeded { .. } => Code::DeadlineExceeded,
            Error::Internal(_) => Code::Internal,
        };
        let moved = matches!(error, Error::Elsewhere { .. } | Error::NotHere(_));
        let mut status = Status::new(code, error.to_string());
        if moved {
            // A node that sent the call on looks for the context's node again.
            status
                .metadata_mut()
                .insert(crate::cluster::forward::MOVED, tonic::metadata::MetadataValue::from_static("1"));
        }
        status
    }
}
