//! A minimal W3C WebDriver client for the browser tests: Debian's chromedriver driving
//! Debian's headless Chromium, spoken to over plain HTTP on loopback with the tests' own
//! request helper, so the suite needs no browser-automation crate.

use crate::common::{free_port, http_request};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Where Debian's packages put the browser and its driver (`.ci/run` installs them).
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// See [`CHROMIUM`].
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A running chromedriver and one browser session; both end when this is dropped.
pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a headless Chromium session.
    pub async fn start() -> Browser {
        for path in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                std::path::Path::new(path).exists(),
                "{path} is missing: install Debian's chromium and chromium-driver (.ci/run does)"
            );
        }
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut ready = false;
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ready, "chromedriver did not start listening on {addr}");
        let profile = tempfile::tempdir().unwrap();
        // Without the background-networking flags Chromium keeps trying to reach Google's
        // hosts, which this machine refuses.
        let args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--window-size=1280,900".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let capabilities = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": { "binary": CHROMIUM, "args": args }
            }}
        });
        let mut browser = Browser {
            driver,
            addr,
            session: String::new(),
            _profile: profile,
        };
        let created = browser.call("POST", "/session", Some(capabilities)).await;
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_owned();
        browser
    }

    /// One WebDriver command; its `value`, or a panic naming the WebDriver error.
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string());
        let (status, text) = http_request(
            self.addr,
            &format!("{method} {path} HTTP/1.1"),
            body.as_deref(),
            Duration::from_secs(60),
        )
        .await;
        let value: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("webdriver {method} {path}: HTTP {status}, {e}: {text}"));
        assert_eq!(status, 200, "webdriver {method} {path}: {value}");
        value["value"].clone()
    }

    /// Opens `url` in the page.
    pub async fn goto(&self, url: &str) {
        let path = format!("/session/{}/url", self.session);
        self.call("POST", &path, Some(json!({ "url": url }))).await;
    }

    /// Runs `script` (a function body) in the page and returns what it returns.
    pub async fn eval(&self, script: &str) -> Value {
        let path = format!("/session/{}/execute/sync", self.session);
        self.call("POST", &path, Some(json!({ "script": script, "args": [] })))
            .await
    }

    /// Evaluates `script` until it returns something truthy, up to `limit`; the last value.
    pub async fn wait_for(&self, script: &str, limit: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let value = self.eval(script).await;
            let truthy = match &value {
                Value::Null | Value::Bool(false) => false,
                Value::Array(a) => !a.is_empty(),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return value;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the page never satisfied `{script}` within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A PNG screenshot of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        let path = format!("/session/{}/screenshot", self.session);
        let value = self.call("GET", &path, None).await;
        base64_decode(value.as_str().expect("base64 screenshot"))
    }
}

/// DevTools commands: only the racer page's tests emulate a GPS, and every test binary that
/// declares `mod webdriver` compiles all of this module.
#[allow(dead_code)]
impl Browser {
    /// Runs a Chrome DevTools Protocol command in the page's target through chromedriver
    /// (`goog/cdp/execute`) and returns its result: geolocation overrides, permissions.
    pub async fn cdp(&self, cmd: &str, params: Value) -> Value {
        let path = format!("/session/{}/goog/cdp/execute", self.session);
        self.call("POST", &path, Some(json!({ "cmd": cmd, "params": params })))
            .await
    }

    /// Sets the geolocation permission of `origin` (`http://127.0.0.1:PORT`) to `setting`
    /// (`granted`, `denied` or `prompt`), as a racer answering the browser's question would.
    pub async fn set_geolocation_permission(&self, origin: &str, setting: &str) {
        self.cdp(
            "Browser.setPermission",
            json!({
                "permission": { "name": "geolocation" },
                "setting": setting,
                "origin": origin,
            }),
        )
        .await;
    }

    /// Moves the browser's emulated GPS to (`lat`, `lon`) with `accuracy_m`: the page's
    /// position watchers are told at once, stamped with the browser's clock.
    pub async fn set_position(&self, lat: f64, lon: f64, accuracy_m: f64) {
        self.cdp(
            "Emulation.setGeolocationOverride",
            json!({ "latitude": lat, "longitude": lon, "accuracy": accuracy_m }),
        )
        .await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends Chromium with its session; the driver is ours to kill.
        let addr = self.addr;
        let path = format!("/session/{}", self.session);
        let _ = std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                runtime.block_on(async {
                    let request = format!("DELETE {path} HTTP/1.1");
                    let _ = tokio::time::timeout(
                        Duration::from_secs(10),
                        http_request(addr, &request, None, Duration::from_secs(10)),
                    )
                    .await;
                });
            }
        })
        .join();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Standard base64 (WebDriver screenshots), ignoring padding and whitespace.
fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes() {
        let Some(v) = ALPHABET.iter().position(|&a| a == c) else {
            continue;
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}
