//! A small W3C WebDriver client for the browser tests: starts Debian's `chromedriver`
//! and a fresh headless Chromium, and speaks the protocol (JSON over HTTP) with the
//! `reqwest` the tests already use, so browser tests add no dependency.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// A desktop Chrome user agent: headless Chromium announces itself as `HeadlessChrome`,
/// which the server rightly counts as a bot.
const USER_AGENT: &str =
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/148.0.0.0 Safari/537.36";

/// A running chromedriver with one browser session; both end on drop.
pub struct Browser {
    driver: Child,
    http: reqwest::Client,
    session: String,
    /// chromedriver's address.
    base: String,
    /// Where downloads land; also holds the profile.
    pub dir: tempfile::TempDir,
}

/// A found element.
#[derive(Clone)]
pub struct Element(String);

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session closes Chromium; killing only the driver would orphan it.
        // Drop cannot await, so this is one plain blocking HTTP request.
        use std::io::{Read, Write};
        if let Ok(mut stream) = std::net::TcpStream::connect(self.base.trim_start_matches("http://")) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let request = format!(
                "DELETE /session/{} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.session
            );
            if stream.write_all(request.as_bytes()).is_ok() {
                let _ = stream.read_to_end(&mut Vec::new());
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a fresh profile, 1280×800.
    pub async fn start() -> Browser {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let driver = Command::new(std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into()))
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (apt-get install chromium-driver)");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("client");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = http.get(format!("{base}/status")).send().await;
            if let Ok(r) = ready {
                let v: Value = r.json().await.unwrap_or(Value::Null);
                if v["value"]["ready"] == true {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = dir.path().join("profile");
        let downloads = dir.path().join("downloads");
        std::fs::create_dir_all(&downloads).expect("downloads dir");
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,800",
            "--autoplay-policy=no-user-gesture-required",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("--user-data-dir={}", profile.display()), format!("--user-agent={USER_AGENT}")])
        .collect::<Vec<_>>();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
                "args": args,
                "prefs": {"download.default_directory": downloads.display().to_string(),
                          "download.prompt_for_download": false},
            },
        }}});
        let r: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .expect("session json");
        let session = r["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {r}")).to_owned();
        let browser = Browser { driver, http, session, base, dir };
        // Headless Chromium needs leave to write downloads into a folder.
        browser
            .cmd(
                "POST",
                "/goog/cdp/execute",
                json!({"cmd": "Browser.setDownloadBehavior",
                       "params": {"behavior": "allow", "downloadPath": downloads.display().to_string()}}),
            )
            .await;
        browser
    }

    /// One WebDriver command; panics with the driver's message on an error.
    pub async fn cmd(&self, method: &str, path: &str, body: Value) -> Value {
        self.try_cmd(method, path, body).await.unwrap_or_else(|e| panic!("{e}"))
    }

    async fn try_cmd(&self, method: &str, path: &str, body: Value) -> Result<Value, String> {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let req = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body),
        };
        let r = req.send().await.map_err(|e| format!("{method} {path}: {e}"))?;
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(format!("{method} {path}: {status} {}", v["value"]["message"]));
        }
        Ok(v["value"].clone())
    }

    /// Runs a command on the element `css` selects. The dashboard re-renders after each
    /// answer it gets, so an element found a moment ago may be gone: find it again.
    async fn on_element(&self, css: &str, method: &str, action: &str, body: Value) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let e = self.find(css).await;
            match self.try_cmd(method, &format!("/element/{}{action}", e.0), body.clone()).await {
                Ok(v) => return v,
                Err(err) if err.contains("stale element") && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(err) => panic!("{css}: {err}"),
            }
        }
    }

    pub async fn goto(&self, url: &str) {
        self.cmd("POST", "/url", json!({"url": url})).await;
    }

    pub async fn current_url(&self) -> String {
        self.cmd("GET", "/url", Value::Null).await.as_str().unwrap_or_default().to_owned()
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its value.
    pub async fn js(&self, script: &str, args: Value) -> Value {
        self.cmd("POST", "/execute/sync", json!({"script": script, "args": args})).await
    }

    /// Runs `script` asynchronously: it passes its result to the callback WebDriver adds
    /// as the last of `arguments`.
    pub async fn js_async(&self, script: &str, args: Value) -> Value {
        self.cmd("POST", "/execute/async", json!({"script": script, "args": args})).await
    }

    /// The current page's cookies as WebDriver reports them, `httpOnly` and all.
    pub async fn cookies(&self) -> Vec<Value> {
        self.cmd("GET", "/cookie", Value::Null).await.as_array().cloned().unwrap_or_default()
    }

    /// Waits until `expr` (a JavaScript expression) is truthy.
    pub async fn wait_for(&self, expr: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        let script = format!("try {{ return !!({expr}); }} catch (e) {{ return false; }}");
        while self.js(&script, json!([])).await != true {
            if Instant::now() >= deadline {
                let page = self.js("return location.href + '\n' + document.body.innerText", json!([])).await;
                panic!("timed out waiting for {what} ({expr}); the page:\n{}", page.as_str().unwrap_or_default());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn find(&self, css: &str) -> Element {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let url = format!("{}/session/{}/element", self.base, self.session);
            let r = self.http.post(url).json(&json!({"using": "css selector", "value": css})).send().await;
            if let Ok(r) = r {
                if r.status().is_success() {
                    let v: Value = r.json().await.unwrap_or(Value::Null);
                    if let Some(id) = v["value"][ELEMENT].as_str() {
                        return Element(id.to_owned());
                    }
                }
            }
            assert!(Instant::now() < deadline, "no element {css}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn click(&self, css: &str) {
        self.on_element(css, "POST", "/click", json!({})).await;
    }

    /// Two clicks in a row at the element's centre, as a person double-clicks.
    pub async fn double_click(&self, css: &str) {
        let e = self.find(css).await;
        let origin = json!({ELEMENT: e.0});
        let actions = json!({"actions": [{"type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"},
            "actions": [
                {"type": "pointerMove", "origin": origin, "x": 0, "y": 0},
                {"type": "pointerDown", "button": 0}, {"type": "pointerUp", "button": 0},
                {"type": "pointerDown", "button": 0}, {"type": "pointerUp", "button": 0}]}]});
        self.cmd("POST", "/actions", actions).await;
    }

    /// Types into a field after clearing it.
    pub async fn fill(&self, css: &str, text: &str) {
        self.on_element(css, "POST", "/clear", json!({})).await;
        self.on_element(css, "POST", "/value", json!({"text": text})).await;
    }

    pub async fn text(&self, css: &str) -> String {
        self.on_element(css, "GET", "/text", Value::Null).await.as_str().unwrap_or_default().to_owned()
    }

    /// Sets the window size (screenshots show the viewport only).
    pub async fn resize(&self, width: u32, height: u32) {
        self.cmd("POST", "/window/rect", json!({"width": width, "height": height})).await;
    }

    /// Saves a PNG of the viewport.
    pub async fn screenshot(&self, path: &Path) {
        let b64 = self.cmd("GET", "/screenshot", Value::Null).await;
        let png = base64_decode(b64.as_str().unwrap_or_default());
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("screenshot dir");
        }
        std::fs::write(path, png).expect("write screenshot");
    }

    /// Waits for a finished download (Chromium writes `.crdownload` until done).
    pub async fn downloaded(&self, name: &str) -> String {
        let path: PathBuf = self.dir.path().join("downloads").join(name);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(text) = std::fs::read_to_string(&path) {
                return text;
            }
            assert!(Instant::now() < deadline, "no download {}", path.display());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Standard base64 (screenshots), without a crate for twenty lines.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in text.bytes().filter_map(value) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}
