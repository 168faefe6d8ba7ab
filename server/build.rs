//! Embeds the panel that Trunk built into `dist/`, precompressed.
//!
//! Every file is stored with its gzip and brotli forms, computed once here at
//! the highest levels, so serving the panel costs a table lookup, not a
//! compression per request. Without `dist/` the table is empty and the server
//! serves a page that says how to build the panel.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let dist = std::env::var_os("ORCH_PANEL_DIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("..").join("dist"));
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-env-changed=ORCH_PANEL_DIST");
    // A directory here makes cargo re-run this script when anything in it,
    // or its existence, changes.
    println!("cargo:rerun-if-changed={}", dist.display());

    let mut files = Vec::new();
    if dist.is_dir() {
        collect(&dist, &dist, &mut files);
    }
    files.sort();

    let mut table = String::from("&[\n");
    for (i, rel) in files.iter().enumerate() {
        let raw = std::fs::read(dist.join(rel)).unwrap();
        let gz = gzip(&raw);
        let br = brotli(&raw);
        let raw_path = out.join(format!("asset{i}"));
        std::fs::write(&raw_path, &raw).unwrap();
        std::fs::write(out.join(format!("asset{i}.gz")), &gz).unwrap();
        std::fs::write(out.join(format!("asset{i}.br")), &br).unwrap();
        writeln!(
            table,
            "    Asset {{ path: {path:?}, raw: include_bytes!(concat!(env!(\"OUT_DIR\"), \"/asset{i}\")), \
             gzip: include_bytes!(concat!(env!(\"OUT_DIR\"), \"/asset{i}.gz\")), \
             brotli: include_bytes!(concat!(env!(\"OUT_DIR\"), \"/asset{i}.br\")), \
             etag: \"\\\"{hash:016x}\\\"\", etag_gzip: \"\\\"{hash:016x}-gzip\\\"\", \
             etag_brotli: \"\\\"{hash:016x}-br\\\"\" }},",
            path = format!("/{rel}"),
            hash = fnv1a(&raw),
        )
        .unwrap();
    }
    table.push(']');
    std::fs::write(out.join("assets.rs"), table).unwrap();

    // Every page's inline loader: the live page's, History's and Keys'.
    let pages: String = ["index.html", "history/index.html", "keys/index.html"]
        .iter()
        .map(|p| std::fs::read_to_string(dist.join(p)).unwrap_or_default())
        .collect();
    let hashes: Vec<String> = inline_scripts(&pages)
        .map(|body| {
            use base64::Engine as _;
            use sha2::Digest as _;
            let digest = sha2::Sha256::digest(body.as_bytes());
            format!(
                "'sha256-{}'",
                base64::engine::general_purpose::STANDARD.encode(digest)
            )
        })
        .collect();
    std::fs::write(
        out.join("inline_script_hashes.rs"),
        format!("{:?}", hashes.join(" ")),
    )
    .unwrap();
}

/// The bodies of the inline `<script>` elements of a page (Trunk's loader).
fn inline_scripts(html: &str) -> impl Iterator<Item = &str> {
    html.split("<script").skip(1).filter_map(|rest| {
        let (attrs, after) = rest.split_once('>')?;
        if attrs.contains("src=") {
            return None;
        }
        after.split_once("</script>").map(|(body, _)| body)
    })
}

fn collect(root: &Path, dir: &Path, files: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(root, &path, files);
        } else {
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            files.push(rel);
        }
    }
}

fn gzip(raw: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(raw).unwrap();
    enc.finish().unwrap()
}

fn brotli(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = brotli::CompressorWriter::new(&mut out, 4096, 11, 22);
        enc.write_all(raw).unwrap();
    }
    out
}

/// A content hash for ETags (not for security).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
