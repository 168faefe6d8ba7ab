//! The panel embedded in the release binary, over plain HTTP: types,
//! compression, caching, fallbacks, security headers.

use tests::Server;

fn client() -> reqwest::Client {
    // No automatic decompression: we check what goes over the wire.
    reqwest::Client::builder().build().unwrap()
}

fn asset_paths(index: &str) -> Vec<String> {
    index
        .split(['"', '\''])
        .filter(|s| {
            s.starts_with('/')
                && (s.ends_with(".wasm") || s.ends_with(".js") || s.ends_with(".css"))
        })
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn index_and_hashed_assets_are_served_right() {
    let server = Server::start(&[]);
    let http = client();
    let res = http.get(server.url("/")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let h = res.headers().clone();
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
    assert_eq!(
        h["cache-control"], "no-cache",
        "index.html is never cached stale"
    );
    assert_eq!(h["x-content-type-options"], "nosniff");
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("'wasm-unsafe-eval'"),
        "{csp}"
    );
    let index = res.text().await.unwrap();
    assert!(
        index.contains("<script type=\"module\""),
        "a built panel is embedded"
    );

    let paths = asset_paths(&index);
    let wasm = paths
        .iter()
        .find(|p| p.ends_with(".wasm"))
        .expect("a wasm asset");
    let js = paths
        .iter()
        .find(|p| p.ends_with(".js"))
        .expect("a js asset");
    for (path, mime) in [(wasm, "application/wasm"), (js, "text/javascript")] {
        let mut etags = std::collections::HashMap::new();
        for (accept, encoding) in [
            ("br, gzip", Some("br")),
            ("gzip", Some("gzip")),
            ("identity", None),
        ] {
            let res = http
                .get(server.url(path))
                .header("accept-encoding", accept)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200, "{path}");
            let h = res.headers();
            assert!(
                h["content-type"].to_str().unwrap().starts_with(mime),
                "{path}"
            );
            assert_eq!(
                h["cache-control"], "public, max-age=31536000, immutable",
                "{path}"
            );
            assert_eq!(
                h.get("content-encoding").map(|v| v.to_str().unwrap()),
                encoding,
                "{path} {accept}"
            );
            let etag = h["etag"].clone();
            let body = res.bytes().await.unwrap();
            if encoding.is_none() && path.ends_with(".wasm") {
                assert_eq!(&body[..4], b"\0asm", "raw WASM");
            }
            let again = http
                .get(server.url(path))
                .header("accept-encoding", accept)
                .header("if-none-match", etag.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(again.status(), 304);
            etags.insert(accept, etag);
        }
        // One ETag per representation: a cache holding the brotli bytes
        // never revalidates them for a client that only takes gzip.
        let distinct: std::collections::HashSet<_> = etags.values().collect();
        assert_eq!(distinct.len(), 3, "{path}: {etags:?}");
        let crossed = http
            .get(server.url(path))
            .header("accept-encoding", "gzip")
            .header("if-none-match", etags["br, gzip"].clone())
            .send()
            .await
            .unwrap();
        assert_eq!(
            crossed.status(),
            200,
            "{path}: the brotli tag is not the gzip one"
        );
        assert_eq!(crossed.headers()["content-encoding"], "gzip");
    }
}

#[tokio::test]
async fn unknown_paths_are_index_html_but_api_stays_json() {
    let server = Server::start(&[]);
    let http = client();
    let res = http
        .get(server.url("/some/client/route"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("<script type=\"module\"")
    );
    // A hashed asset of an earlier build (a page loaded before a redeploy)
    // is a 404, not index.html under a script's name.
    for gone in [
        "/panel-0123456789abcdef.js",
        "/panel-0123456789abcdef_bg.wasm",
        "/style-0123456789abcdef.css",
        "/favicon.ico",
    ] {
        let res = http.get(server.url(gone)).send().await.unwrap();
        assert_eq!(res.status(), 404, "{gone}");
        assert!(
            res.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json")
        );
    }
    let res = http
        .get(server.url("/api/nothing/here"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(body["error"].is_string());
}

#[test]
fn trunk_pins_the_wasm_bindgen_of_cargo_lock() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).unwrap();
    let locked = lock
        .split("[[package]]")
        .find(|p| p.contains("\nname = \"wasm-bindgen\"\n"))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
        .expect("wasm-bindgen in Cargo.lock")
        .trim_matches('"')
        .to_owned();
    let trunk = std::fs::read_to_string(root.join("Trunk.toml")).unwrap();
    assert!(
        trunk.contains(&format!("wasm_bindgen = \"{locked}\"")),
        "Trunk.toml must pin wasm_bindgen = \"{locked}\""
    );
}

/// The edit loop's Trunk (`trunk serve`, `trunk build`) builds the very
/// panel `scripts/build-panel.sh` builds without it: the same WASM and JS,
/// and pages that load them the same way.
#[test]
fn trunk_builds_the_panel_the_build_script_builds() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("trunk")
        .args(["build", "--release", "--offline", "--dist"])
        .arg(out.path())
        .current_dir(&root)
        .status()
        .expect("trunk is on PATH (scripts/install.sh --test installs it)");
    assert!(status.success(), "trunk build failed");
    // Names differ (each hashes its own way); contents must not.
    let files = |dir: &std::path::Path| {
        let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .filter_map(|p| {
                let name = p.file_name()?.to_str()?.to_owned();
                let kind = if name.ends_with("_bg.wasm") {
                    "wasm"
                } else if name.ends_with(".js") {
                    "js"
                } else if name.ends_with(".css") {
                    "css"
                } else {
                    return None;
                };
                Some((kind.to_owned(), std::fs::read(&p).unwrap()))
            })
            .collect();
        v.sort();
        v
    };
    let ours = files(&root.join("dist"));
    let trunks = files(out.path());
    assert_eq!(ours.len(), 3, "dist/ holds the panel's wasm, js and css");
    for ((kind, a), (_, b)) in ours.iter().zip(&trunks) {
        assert!(
            a == b,
            "{kind} differs between Trunk's build and build-panel.sh's"
        );
    }
    let page = std::fs::read_to_string(out.path().join("index.html")).unwrap();
    let mine = std::fs::read_to_string(root.join("dist/index.html")).unwrap();
    for page in [&page, &mine] {
        assert!(
            page.contains("import init, * as bindings from '/panel-"),
            "{page}"
        );
        assert!(page.contains("rel=\"stylesheet\" href=\"/style-"), "{page}");
    }
}
