//! Any bytes as a request body: decoding never panics, and every refusal is
//! a client error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use server::api::IngestRequest;
use server::extract::decode_json;
use server::routing::QueryRequest;

fuzz_target!(|data: &[u8]| {
    for status in [
        decode_json::<QueryRequest>(data).err().map(|e| e.status()),
        decode_json::<IngestRequest>(data).err().map(|e| e.status()),
    ]
    .into_iter()
    .flatten()
    {
        assert!(status.is_client_error());
    }
    let _ = server::api::parse_limit(std::str::from_utf8(data).ok(), 100);
});
