//! The web pages: static files compiled into the binary, so the server needs no asset
//! folder, no build step at run time and no CDN (the machines it runs on may have no
//! internet). The spectator page (`/`) and the racer page (`/ride`, a phone streaming its
//! GPS from a personal `#token=` link) are plain HTML, CSS and JavaScript in `web/`; they
//! talk to the server like any other client, over `/ws` with the JSON subprotocol.
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

/// `Content-Type` of the HTML pages.
const HTML: &str = "text/html; charset=utf-8";
/// `Content-Type` of the scripts.
const JS: &str = "text/javascript; charset=utf-8";
/// `Content-Type` of the style sheets.
const CSS: &str = "text/css; charset=utf-8";

/// One row of [`ASSETS`].
const fn embedded(path: &'static str, content_type: &'static str, body: &'static [u8]) -> Asset {
    Asset {
        path,
        content_type,
        body,
    }
}

/// Every file of the pages. `/` is the spectator page; it reads `?race=` and `#token=` so a
/// share link opens one race directly. `/ride` is the racer page; it reads its racer token
/// from `#token=`, which never reaches the server's logs.
const ASSETS: [Asset; 6] = [
    embedded("/", HTML, include_bytes!("../../web/index.html")),
    embedded("/app.js", JS, include_bytes!("../../web/app.js")),
    embedded("/style.css", CSS, include_bytes!("../../web/style.css")),
    embedded("/ride", HTML, include_bytes!("../../web/ride.html")),
    embedded("/ride.js", JS, include_bytes!("../../web/ride.js")),
    embedded("/ride.css", CSS, include_bytes!("../../web/ride.css")),
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

    #[test]
    fn the_racer_page_and_its_files_are_embedded_and_reference_each_other() {
        let ride = asset("/ride").unwrap();
        assert!(ride.content_type.starts_with("text/html"));
        let page = std::str::from_utf8(ride.body).unwrap();
        for file in ["/ride.js", "/ride.css", "/style.css"] {
            assert!(page.contains(file), "the racer page loads {file}");
            assert!(asset(file).is_some_and(|a| !a.body.is_empty()), "{file}");
        }
        assert!(asset("/ride.js")
            .unwrap()
            .content_type
            .starts_with("text/javascript"));
        assert!(asset("/ride.css")
            .unwrap()
            .content_type
            .starts_with("text/css"));
        let script = std::str::from_utf8(asset("/ride.js").unwrap().body).unwrap();
        assert!(script.contains("peloton.v1.json") && script.contains("indexedDB"));
        // The script is its own service worker: it keeps every file the page needs offline.
        for file in ["'/ride'", "'/ride.js'", "'/ride.css'", "'/style.css'"] {
            assert!(script.contains(file), "the offline copy keeps {file}");
        }
        // Paths match exactly: no prefix or `.html` spelling serves the page by accident.
        assert!(asset("/ride.html").is_none() && asset("/rid").is_none());
    }
}
