//! The web client's files: `--web-dir` served at `/`, unknown paths answered with
//! `index.html` so a single-page app can route on the client. A file is served only if its
//! resolved path stays inside the directory: a symbolic link in it that points elsewhere
//! (`/etc/passwd`, a data dir) is answered 404, as if it were not there.

use std::path::{Path, PathBuf};

use axum::body::Body;
use http::{Request, Response, StatusCode};
use tower::ServiceExt;
use tower_http::services::{ServeDir, ServeFile};

#[derive(Clone)]
pub struct StaticFiles {
    /// The directory, resolved (its own path may go through links; what is inside may not
    /// leave it).
    root: PathBuf,
    files: ServeDir<ServeFile>,
}

impl StaticFiles {
    pub fn new(dir: &Path) -> Self {
        let root = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
        let files = ServeDir::new(&root).fallback(ServeFile::new(root.join("index.html")));
        Self { root, files }
    }

    pub async fn serve(&self, request: Request<Body>) -> Response<Body> {
        if !self.stays_inside(request.uri().path()).await {
            let mut response = Response::new(Body::from("not found\n"));
            *response.status_mut() = StatusCode::NOT_FOUND;
            return response;
        }
        match self.files.clone().oneshot(request).await {
            Ok(response) => response.map(Body::new),
            Err(never) => match never {},
        }
    }

    /// Whether the file a URL path names, if it exists, resolves to a place inside the
    /// directory (one that does not exist gets `index.html`, which is inside).
    async fn stays_inside(&self, url_path: &str) -> bool {
        let decoded = percent_encoding::percent_decode_str(url_path).decode_utf8_lossy();
        let mut path = self.root.clone();
        for part in decoded.split('/').filter(|part| !part.is_empty() && *part != ".") {
            if part == ".." || part.contains('\\') {
                // ServeDir refuses these too; never resolve them.
                return false;
            }
            path.push(part);
        }
        match tokio::fs::canonicalize(&path).await {
            Ok(resolved) => resolved.starts_with(&self.root),
            Err(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn links_out_of_the_directory_are_not_followed() {
        let outside = tempfile::tempdir().expect("outside");
        std::fs::write(outside.path().join("secret"), "secret").expect("secret");
        let web = tempfile::tempdir().expect("web");
        std::fs::write(web.path().join("index.html"), "<html>").expect("index");
        std::fs::create_dir(web.path().join("assets")).expect("assets");
        std::fs::write(web.path().join("assets/app.js"), "js").expect("js");
        std::os::unix::fs::symlink(outside.path().join("secret"), web.path().join("leak")).expect("link");
        std::os::unix::fs::symlink(outside.path(), web.path().join("out")).expect("dir link");
        std::os::unix::fs::symlink(web.path().join("assets/app.js"), web.path().join("inner")).expect("inner link");
        let files = StaticFiles::new(web.path());
        for (path, inside) in [
            ("/", true),
            ("/assets/app.js", true),
            ("/inner", true),
            ("/no/such/route", true),
            ("/leak", false),
            ("/out/secret", false),
            ("/%6Ceak", false),
            ("/assets/../leak", false),
        ] {
            assert_eq!(files.stays_inside(path).await, inside, "{path}");
        }
    }
}
