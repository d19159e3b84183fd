//! Wire → domain: validates each request and names the field that is wrong.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ctxd_proto::v1 as pb;
use tonic::Status;

use crate::domain::{ContextConfig, ContextId};
use crate::store::{BY_UPDATED_KEY_LEN, ListCursor};

pub const DEFAULT_PAGE_SIZE: usize = 50;
pub const MAX_PAGE_SIZE: usize = 1000;
const MAX_TITLE_BYTES: usize = 1024;
const MAX_ID_BYTES: usize = 256;

/// What requests are checked against.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_message_bytes: usize,
    /// Names of the tools the server has, for checking `auto_approve_tools`.
    pub tool_names: Vec<String>,
}

pub fn context_id(field: &str, value: &str) -> Result<ContextId, Status> {
    if value.is_empty() {
        return Err(Status::invalid_argument(format!("{field} is required")));
    }
    value.parse().map_err(|e| Status::invalid_argument(format!("{field}: {e}")))
}

/// An optional client-chosen id: empty means none.
pub fn optional_context_id(field: &str, value: &str) -> Result<Option<ContextId>, Status> {
    if value.is_empty() { Ok(None) } else { context_id(field, value).map(Some) }
}

pub fn content(value: String, limits: &Limits) -> Result<String, Status> {
    if value.trim().is_empty() {
        return Err(Status::invalid_argument("content must not be empty"));
    }
    if value.len() > limits.max_message_bytes {
        return Err(Status::invalid_argument(format!(
            "content is {} bytes; the limit is {} bytes",
            value.len(),
            limits.max_message_bytes
        )));
    }
    Ok(value)
}

pub fn client_message_id(value: String) -> Result<Option<String>, Status> {
    if value.len() > MAX_ID_BYTES {
        return Err(Status::invalid_argument(format!("client_message_id is longer than {MAX_ID_BYTES} bytes")));
    }
    Ok(if value.is_empty() { None } else { Some(value) })
}

pub fn title(value: String) -> Result<String, Status> {
    if value.len() > MAX_TITLE_BYTES {
        return Err(Status::invalid_argument(format!("title is longer than {MAX_TITLE_BYTES} bytes")));
    }
    Ok(value)
}

pub fn config(value: Option<pb::ContextConfig>, limits: &Limits) -> Result<ContextConfig, Status> {
    let pb::ContextConfig { system_prompt, model, auto_approve_tools } = value.unwrap_or_default();
    if system_prompt.len() > limits.max_message_bytes {
        return Err(Status::invalid_argument(format!(
            "config.system_prompt is {} bytes; the limit is {} bytes",
            system_prompt.len(),
            limits.max_message_bytes
        )));
    }
    if model.len() > MAX_ID_BYTES {
        return Err(Status::invalid_argument(format!("config.model is longer than {MAX_ID_BYTES} bytes")));
    }
    if let Some(unknown) = auto_approve_tools.iter().find(|name| !limits.tool_names.contains(name)) {
        return Err(Status::invalid_argument(format!(
            "config.auto_approve_tools: no tool named {unknown:?}; the server has: {}",
            limits.tool_names.join(", ")
        )));
    }
    Ok(ContextConfig { system_prompt, model, auto_approve_tools })
}

pub fn page_size(value: i32) -> Result<usize, Status> {
    match usize::try_from(value) {
        Ok(0) => Ok(DEFAULT_PAGE_SIZE),
        Ok(size) if size <= MAX_PAGE_SIZE => Ok(size),
        _ => Err(Status::invalid_argument(format!("page_size must be between 0 and {MAX_PAGE_SIZE}, got {value}"))),
    }
}

pub fn page_token(value: &str) -> Result<Option<ListCursor>, Status> {
    if value.is_empty() {
        return Ok(None);
    }
    let invalid = || Status::invalid_argument("page_token is not a token this server issued");
    let bytes = URL_SAFE_NO_PAD.decode(value).map_err(|_| invalid())?;
    let key: [u8; BY_UPDATED_KEY_LEN] = bytes.try_into().map_err(|_| invalid())?;
    Ok(Some(ListCursor(key)))
}

pub fn next_page_token(cursor: Option<ListCursor>) -> String {
    cursor.map(|ListCursor(key)| URL_SAFE_NO_PAD.encode(key)).unwrap_or_default()
}

/// Tool call ids of an ApproveTools request.
pub fn tool_call_ids(field: &str, ids: Vec<String>) -> Result<Vec<String>, Status> {
    if let Some(bad) = ids.iter().find(|id| id.is_empty() || id.len() > MAX_ID_BYTES) {
        return Err(Status::invalid_argument(format!("{field}: invalid tool call id {bad:?}")));
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_bad_ones_are_refused() {
        let cursor = ListCursor([9; BY_UPDATED_KEY_LEN]);
        let token = next_page_token(Some(cursor));
        assert_eq!(page_token(&token).ok().flatten(), Some(cursor));
        assert_eq!(next_page_token(None), "");
        for bad in ["%%%", "AAAA", "not-a-token"] {
            assert_eq!(page_token(bad).err().map(|s| s.code()), Some(tonic::Code::InvalidArgument), "{bad}");
        }
    }

    #[test]
    fn page_sizes_default_and_are_bounded() {
        assert_eq!(page_size(0).ok(), Some(DEFAULT_PAGE_SIZE));
        assert_eq!(page_size(1000).ok(), Some(1000));
        assert!(page_size(1001).is_err());
        assert!(page_size(-1).is_err());
    }
}
