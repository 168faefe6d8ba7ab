use super::*;

fn parse_limit(raw: Option<&str>, capacity: usize) -> Result<usize, ApiError> {
    StatusQuery::parse(raw, capacity).map(|q| q.limit)
}

#[test]
fn since_parsing() {
    let since = |raw| StatusQuery::parse(Some(raw), 100).map(|q| q.since);
    assert_eq!(since("").unwrap(), None);
    assert_eq!(since("since=0").unwrap(), Some(0));
    assert_eq!(since("since=42&limit=5").unwrap(), Some(42));
    assert_eq!(since("since=9007199254740992").unwrap(), Some(MAX_SEQ));
    for bad in [
        "since=-1",
        "since=",
        "since=1.5",
        "since=x",
        "since=1&since=2",
        "since=9007199254740993",
    ] {
        let err = since(bad).unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert!(err.to_string().starts_with("since: "), "{err}");
    }
}

#[test]
fn limit_parsing() {
    assert_eq!(parse_limit(None, 100).unwrap(), 10);
    assert_eq!(parse_limit(Some(""), 100).unwrap(), 10);
    assert_eq!(parse_limit(Some("other=1"), 100).unwrap(), 10);
    assert_eq!(parse_limit(Some("limit=1"), 100).unwrap(), 1);
    assert_eq!(parse_limit(Some("limit=100"), 100).unwrap(), 100);
    for bad in [
        "limit=0",
        "limit=101",
        "limit=-1",
        "limit=abc",
        "limit=",
        "limit=1.5",
        "limit=%FF",
        "limit=1&limit=2",
        "limit=99999999999999999999999",
    ] {
        let err = parse_limit(Some(bad), 100).unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
}

#[test]
fn etag_matching_is_weak_and_handles_lists() {
    let tag: ETag = "W/\"a-1\"".parse().unwrap();
    let mut h = HeaderMap::new();
    assert!(!if_none_match(&h, &tag));
    h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"a-1\""));
    assert!(if_none_match(&h, &tag));
    h.insert(
        header::IF_NONE_MATCH,
        HeaderValue::from_static("W/\"x\", W/\"a-1\""),
    );
    assert!(if_none_match(&h, &tag));
    h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("W/\"a-2\""));
    assert!(!if_none_match(&h, &tag));
    h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
    assert!(if_none_match(&h, &tag));
    // Garbage is no condition at all.
    h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("a-1, \""));
    assert!(!if_none_match(&h, &tag));
}
