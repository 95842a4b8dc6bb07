//! A registry's and its token service's replies as `remote::oci::replies` decodes them. The
//! first byte picks the parser: 0 token reply, 1 error body, 2 upload `Location` (answering a
//! PATCH to the registry), 3 a blob's `Content-Length`. Nothing panics; an accepted token is
//! header-safe, an accepted upload location stays on the registry's origin.
#![no_main]
use loratool::remote::oci::replies;
use loratool_fuzz::run;

const BASE: &str = "https://registry.example:5000";
const SESSION: &str = "https://registry.example:5000/v2/team/a/blobs/uploads/u1?state=x";

libfuzzer_sys::fuzz_target!(|data: &[u8]| run(data, |data, _| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let text = std::str::from_utf8(body).ok();
    match which % 4 {
        0 => {
            if let Ok(t) = replies::token("https://auth.example/token", body) {
                assert!(!t.is_empty() && t.len() < 64 << 10);
                assert!(t.bytes().all(|b| b.is_ascii_graphic()), "token {t:?}");
            }
        }
        1 => {
            if let Some(d) = replies::error_detail(body) {
                assert!(!d.is_empty());
            }
        }
        2 => {
            if let Ok(loc) = replies::upload_location(SESSION, BASE, text) {
                assert_eq!(
                    loratool::remote::http::origin(&loc),
                    loratool::remote::http::origin(BASE),
                    "location {loc:?} leaves the registry"
                );
            }
        }
        _ => {
            let size = 4096;
            let matches = replies::blob_size_matches(text, size);
            let parsed = text.and_then(|t| t.parse::<u64>().ok());
            assert_eq!(matches, parsed.is_none_or(|l| l == size));
        }
    }
}));
