//! Shared secrets read from files: the HS256 JWT secret and the cluster secret. A secret is
//! the file's bytes without a trailing newline, and a short one is refused at start.

use std::path::Path;

/// Bytes a shared secret has at least.
pub const MIN_SECRET_BYTES: usize = 32;

/// A shared secret (`what`) from the file at `path`: its bytes without a trailing newline, at
/// least [`MIN_SECRET_BYTES`] of them.
pub fn read_secret_file(what: &str, path: &Path) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {what} file {}: {e}", path.display()))?;
    let secret = bytes.strip_suffix(b"\n").map(|b| b.strip_suffix(b"\r").unwrap_or(b)).unwrap_or(&bytes);
    if secret.len() < MIN_SECRET_BYTES {
        return Err(format!(
            "the {what} in {} is {} bytes; it needs at least {MIN_SECRET_BYTES} (e.g. `openssl rand -hex 32`)",
            path.display(),
            secret.len()
        ));
    }
    Ok(secret.to_vec())
}
