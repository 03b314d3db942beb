//! The spectator web page: static files compiled into the binary, so the server needs no
//! asset folder, no build step at run time and no CDN (the machines it runs on may have no
//! internet). The page is plain HTML, CSS and JavaScript in `web/`; it talks to the server
//! like any other client, over `/ws` with the JSON subprotocol.
//!
//! [`super::http`] serves these at their paths and hands out guest tokens at
//! [`GUEST_TOKEN_PATH`] when `web.public_races` allows.

/// Where the page gets a read-only spectator token when races are public.
pub const GUEST_TOKEN_PATH: &str = "/api/guest-token";

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    /// The URL path it is served at.
    pub path: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes, from `web/` at build time.
    pub body: &'static [u8],
}

/// Every file of the page. `/` is the page itself; it reads `?race=` and `#token=` so a share
/// link opens one race directly.
const ASSETS: [Asset; 3] = [
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../../web/index.html"),
    },
    Asset {
        path: "/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/app.js"),
    },
    Asset {
        path: "/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../web/style.css"),
    },
];

/// The asset served at `path`, if any (`/index.html` is the page too).
pub fn asset(path: &str) -> Option<&'static Asset> {
    let path = if path == "/index.html" { "/" } else { path };
    ASSETS.iter().find(|a| a.path == path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_files_are_embedded_and_reference_each_other() {
        let page = std::str::from_utf8(asset("/").unwrap().body).unwrap();
        assert!(page.contains("/app.js") && page.contains("/style.css"));
        assert!(asset("/index.html").is_some());
        assert!(asset("/nope.js").is_none());
        assert!(!asset("/app.js").unwrap().body.is_empty());
    }
}
