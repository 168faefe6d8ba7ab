//! Who may read: with `--read-key`, every read of decisions, status,
//! stream, history, calibration, health details and `/metrics` needs a
//! read key or an API key as `Authorization: Bearer <key>`, or a session:
//! the cookie `POST /api/session` sets for a key (a browser's EventSource
//! cannot send headers). Without `--read-key` reads stay open, as before.
//!
//! A session is 32 random bytes from the operating system, kept in memory
//! only (a restart signs every panel out), for [`SESSION_TTL`]; the cookie
//! is `HttpOnly` (no script reads it) and `SameSite=Strict` (no other
//! site's page sends it).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, header};
use subtle::ConstantTimeEq as _;

/// The session cookie's name.
pub const COOKIE: &str = "orch_session";
/// The admin session's cookie (the Keys page's, opened with `--admin-key`).
pub const ADMIN_COOKIE: &str = "orch_admin";
/// How long a session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3_600);
/// Most sessions held at once; past it the oldest goes.
const MAX_SESSIONS: usize = 10_000;

/// The keys that may read, and the sessions opened with them.
#[derive(Debug, Default)]
pub struct Readers {
    /// `--read-key` and `--api-key` values; empty: reads are open.
    keys: Vec<String>,
    /// Whether any `--read-key` was given.
    required: bool,
    sessions: Mutex<HashMap<String, Instant>>,
    /// The name of the sessions' cookie.
    cookie: &'static str,
}

impl Readers {
    /// Reads need one of `read_keys` (or `api_keys`) when `read_keys` has any.
    pub fn new(read_keys: &[String], api_keys: &[String]) -> Self {
        Readers {
            required: !read_keys.is_empty(),
            keys: read_keys.iter().chain(api_keys).cloned().collect(),
            sessions: Mutex::default(),
            cookie: COOKIE,
        }
    }

    /// The admin: the `--admin-key` (none: nobody), and the Keys page's
    /// sessions, under their own cookie.
    pub fn admins(admin_key: Option<&str>) -> Self {
        Readers {
            required: true,
            keys: admin_key.map(str::to_owned).into_iter().collect(),
            sessions: Mutex::default(),
            cookie: ADMIN_COOKIE,
        }
    }

    /// The `Set-Cookie` value of a session of these keys (`None`: the one
    /// that ends it).
    pub fn set_cookie(&self, token: Option<&str>) -> HeaderValue {
        cookie_header(self.cookie, token)
    }

    /// True when reads need a key.
    pub fn required(&self) -> bool {
        self.required
    }

    /// True when `key` is a read key or an API key (compared in constant
    /// time).
    pub fn is_key(&self, key: &str) -> bool {
        self.keys.iter().fold(false, |hit, k| {
            hit | bool::from(k.as_bytes().ct_eq(key.as_bytes()))
        })
    }

    /// True when the request may read: nothing is required, or it carries
    /// a key as a bearer token or a live session cookie.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        if !self.required {
            return true;
        }
        if let Some(key) = bearer(headers)
            && self.is_key(key)
        {
            return true;
        }
        session_cookie(headers, self.cookie).is_some_and(|token| self.has_session(&token))
    }

    /// A new session for a client that showed a key: its token.
    pub fn open_session(&self) -> Result<String, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let now = Instant::now();
        let mut sessions = self.lock();
        sessions.retain(|_, expires| *expires > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, expires)| **expires)
                .map(|(t, _)| t.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(token.clone(), now + SESSION_TTL);
        Ok(token)
    }

    /// Ends the session the request carries, if any.
    pub fn close_session(&self, headers: &HeaderMap) {
        if let Some(token) = session_cookie(headers, self.cookie) {
            self.lock().remove(&token);
        }
    }

    fn has_session(&self, token: &str) -> bool {
        self.lock()
            .get(token)
            .is_some_and(|expires| *expires > Instant::now())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The `Set-Cookie` value of a read session (`None`: the one that ends it).
pub fn set_cookie(token: Option<&str>) -> HeaderValue {
    cookie_header(COOKIE, token)
}

fn cookie_header(name: &str, token: Option<&str>) -> HeaderValue {
    let value = match token {
        Some(t) => format!(
            "{name}={t}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
            SESSION_TTL.as_secs()
        ),
        None => format!("{name}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    };
    HeaderValue::from_str(&value).expect("a cookie of hex is a valid header")
}

/// The bearer token of `Authorization`, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
}

/// The session token among the request's cookies, if any.
fn session_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    use headers::HeaderMapExt as _;
    let cookies = headers.typed_get::<headers::Cookie>()?;
    cookies.get(name).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(name: header::HeaderName, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn without_read_keys_everyone_reads() {
        let r = Readers::new(&[], &["api".into()]);
        assert!(!r.required());
        assert!(r.allows(&HeaderMap::new()));
    }

    #[test]
    fn a_key_or_a_session_reads_nothing_else_does() {
        let r = Readers::new(&["reader-1".into()], &["api-1".into()]);
        assert!(!r.allows(&HeaderMap::new()));
        assert!(r.allows(&with(header::AUTHORIZATION, "Bearer reader-1")));
        assert!(r.allows(&with(header::AUTHORIZATION, "bearer api-1")));
        assert!(!r.allows(&with(header::AUTHORIZATION, "Bearer reader-2")));
        let token = r.open_session().unwrap();
        assert_eq!(token.len(), 64);
        let cookie = format!("theme=dark; {COOKIE}={token}");
        let h = with(header::COOKIE, &cookie);
        assert!(r.allows(&h));
        assert!(!r.allows(&with(
            header::COOKIE,
            &format!("{COOKIE}=00{}", &token[2..])
        )));
        r.close_session(&h);
        assert!(!r.allows(&h), "a closed session reads no more");
        let set = set_cookie(Some("ab")).to_str().unwrap().to_owned();
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
    }
}
