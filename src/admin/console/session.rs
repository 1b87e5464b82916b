//! Console sessions, CSRF tokens and the lockout of repeated failed sign-ins.
//!
//! A session is a random 256-bit id in a cookie (`HttpOnly; Secure; SameSite=Strict`), kept in
//! memory only as its SHA-256 (a restart signs everyone out). It ends when signed out or after
//! `idle` without a request. Each session has its own CSRF token, which every form carries in a
//! hidden field; the sign-in form, before there is a session, carries the token of a short-lived
//! pre-session cookie (double submit).
//!
//! Lockout is per configured user name: after `max_failures` consecutive failures (wrong
//! password at sign-in or at a signature) the name is locked for `base`, doubling with every
//! further failure up to `max_lock`. A success clears the count; so does a quiet hour.

use crate::core::clock::Clock;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use subtle::ConstantTimeEq;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "custodian-session";
/// The pre-session cookie of the sign-in form (its CSRF token).
pub const SIGN_IN_COOKIE: &str = "custodian-sign-in";
/// Most sessions at once; beyond it the one idle longest is ended.
pub const MAX_SESSIONS: usize = 1000;
/// Failures older than this no longer count towards a lockout.
const FAILURES_FORGOTTEN_MS: u64 = 3_600_000;

/// How repeated failures lock a user name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    pub max_failures: u32,
    pub base_ms: u64,
    pub max_lock_ms: u64,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        LockoutPolicy {
            max_failures: 5,
            base_ms: 30_000,
            max_lock_ms: 3_600_000,
        }
    }
}

/// A signed-in person, as the console needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The configured user's name (looked up again on every request: a user removed from the
    /// configuration is signed out by the next reload).
    pub user: String,
    pub csrf: String,
}

#[derive(Debug)]
struct Entry {
    session: Session,
    last_seen_ms: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Failures {
    count: u32,
    last_ms: u64,
    locked_until_ms: u64,
}

/// What a failed attempt did to the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failed {
    /// Consecutive failures, this one included.
    pub count: u32,
    /// Set when this failure locked the name: for how long.
    pub locked_for_ms: Option<u64>,
}

/// Sessions and failures, shared by every console request.
#[derive(Debug)]
pub struct Sessions {
    clock: Arc<dyn Clock>,
    idle_ms: u64,
    policy: LockoutPolicy,
    sessions: Mutex<HashMap<[u8; 32], Entry>>,
    failures: Mutex<HashMap<String, Failures>>,
    rng: ring::rand::SystemRandom,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A name as the lockout counts it (the same person however the name is typed).
fn name_key(name: &str) -> String {
    name.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Whether two tokens are the same, in constant time.
pub fn same_token(a: &str, b: &str) -> bool {
    !a.is_empty() && a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

impl Sessions {
    pub fn new(clock: Arc<dyn Clock>, idle_ms: u64, policy: LockoutPolicy) -> Sessions {
        Sessions {
            clock,
            idle_ms: idle_ms.max(1),
            policy,
            sessions: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            rng: ring::rand::SystemRandom::new(),
        }
    }

    /// The idle timeout in milliseconds.
    pub fn idle_ms(&self) -> u64 {
        self.idle_ms
    }

    /// A fresh random token: 32 bytes, hex.
    pub fn token(&self) -> String {
        use ring::rand::SecureRandom;
        let mut b = [0u8; 32];
        // The system's random source failing is not recoverable for a session.
        self.rng
            .fill(&mut b)
            .expect("the system random number generator failed");
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// Starts a session for `user`; returns the cookie value (never stored as such).
    pub fn create(&self, user: &str) -> String {
        let id = self.token();
        let now = self.clock.now_ms();
        let mut s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        s.retain(|_, e| now.saturating_sub(e.last_seen_ms) < self.idle_ms);
        if s.len() >= MAX_SESSIONS
            && let Some(k) = s
                .iter()
                .min_by_key(|(_, e)| e.last_seen_ms)
                .map(|(k, _)| *k)
        {
            s.remove(&k);
        }
        s.insert(
            digest(&id),
            Entry {
                session: Session {
                    user: user.to_string(),
                    csrf: self.token(),
                },
                last_seen_ms: now,
            },
        );
        id
    }

    /// The session of a cookie value, if it is live; a request renews its idle timer. An idle
    /// session is ended here: `Err(user)` says whose session timed out.
    pub fn get(&self, id: &str) -> Result<Option<Session>, String> {
        let now = self.clock.now_ms();
        let key = digest(id);
        let mut s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let Some(e) = s.get_mut(&key) else {
            return Ok(None);
        };
        if now.saturating_sub(e.last_seen_ms) >= self.idle_ms {
            let user = e.session.user.clone();
            s.remove(&key);
            return Err(user);
        }
        e.last_seen_ms = now;
        Ok(Some(e.session.clone()))
    }

    /// Ends a session (sign out).
    pub fn end(&self, id: &str) -> Option<Session> {
        let mut s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        s.remove(&digest(id)).map(|e| e.session)
    }

    /// Until when the name is locked (Unix ms), if it is now.
    pub fn locked_until(&self, name: &str) -> Option<u64> {
        let now = self.clock.now_ms();
        let f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        f.get(&name_key(name))
            .filter(|x| x.locked_until_ms > now)
            .map(|x| x.locked_until_ms)
    }

    /// Counts a failed attempt for a configured user's name.
    pub fn failed(&self, name: &str) -> Failed {
        let now = self.clock.now_ms();
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let x = f.entry(name_key(name)).or_default();
        if now.saturating_sub(x.last_ms) >= FAILURES_FORGOTTEN_MS && x.locked_until_ms <= now {
            x.count = 0;
        }
        x.count += 1;
        x.last_ms = now;
        let mut locked_for_ms = None;
        if x.count >= self.policy.max_failures {
            let doublings = (x.count - self.policy.max_failures).min(32);
            let d = self
                .policy
                .base_ms
                .saturating_mul(1u64 << doublings)
                .min(self.policy.max_lock_ms);
            x.locked_until_ms = now + d;
            locked_for_ms = Some(d);
        }
        Failed {
            count: x.count,
            locked_for_ms,
        }
    }

    /// A successful sign-in or signature clears the name's failures.
    pub fn succeeded(&self, name: &str) {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        f.remove(&name_key(name));
    }
}

/// A `Set-Cookie` value with the console's flags; `None` clears the cookie.
pub fn cookie(name: &str, value: Option<&str>) -> String {
    match value {
        Some(v) => format!("{name}={v}; Path=/; HttpOnly; Secure; SameSite=Strict"),
        None => format!("{name}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0"),
    }
}

/// The value of a cookie in a request's `Cookie` headers.
pub fn cookie_value<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::clock::ManualClock;

    fn sessions(clock: &ManualClock) -> Sessions {
        Sessions::new(
            Arc::new(clock.clone()),
            15 * 60_000,
            LockoutPolicy::default(),
        )
    }

    #[test]
    fn a_session_lives_while_used_and_ends_when_idle() {
        let clock = ManualClock::new(1_800_000_000_000);
        let s = sessions(&clock);
        let id = s.create("Dr. A");
        assert_eq!(id.len(), 64);
        let first = s.get(&id).unwrap().unwrap();
        assert_eq!(first.user, "Dr. A");
        assert_eq!(first.csrf.len(), 64);
        assert_ne!(first.csrf, id);
        // Used every 14 minutes: still alive after an hour, with the same CSRF token.
        for _ in 0..5 {
            clock.advance_ms(14 * 60_000);
            assert_eq!(s.get(&id).unwrap().unwrap(), first);
        }
        clock.advance_ms(15 * 60_000);
        assert_eq!(s.get(&id), Err("Dr. A".to_string()));
        assert_eq!(s.get(&id), Ok(None), "ended, not just refused");
        assert_eq!(s.get("not-a-session"), Ok(None));
    }

    #[test]
    fn sign_out_ends_the_session_and_sessions_are_bounded() {
        let clock = ManualClock::new(1_800_000_000_000);
        let s = sessions(&clock);
        let id = s.create("B");
        assert_eq!(s.end(&id).unwrap().user, "B");
        assert_eq!(s.get(&id), Ok(None));
        let first = s.create("C");
        clock.advance_ms(1);
        for _ in 0..MAX_SESSIONS {
            s.create("D");
        }
        assert_eq!(s.get(&first), Ok(None), "the longest idle made room");
        assert_eq!(s.sessions.lock().unwrap().len(), MAX_SESSIONS);
    }

    #[test]
    fn failures_lock_with_back_off_and_a_success_clears_them() {
        let clock = ManualClock::new(1_800_000_000_000);
        let s = sessions(&clock);
        for n in 1..5 {
            assert_eq!(
                s.failed("Dr. A"),
                Failed {
                    count: n,
                    locked_for_ms: None
                }
            );
        }
        assert!(s.locked_until("dr.  a").is_none());
        // The fifth locks for 30 s, the sixth for 60 s, then 120 s ...
        assert_eq!(s.failed("DR. A").locked_for_ms, Some(30_000));
        assert_eq!(s.locked_until("Dr. A"), Some(1_800_000_030_000));
        clock.advance_ms(30_000);
        assert!(s.locked_until("Dr. A").is_none());
        assert_eq!(s.failed("Dr. A").locked_for_ms, Some(60_000));
        assert_eq!(s.failed("Dr. A").locked_for_ms, Some(120_000));
        for _ in 0..20 {
            s.failed("Dr. A");
        }
        assert_eq!(
            s.failed("Dr. A").locked_for_ms,
            Some(3_600_000),
            "capped at an hour"
        );
        // Another name is not affected.
        assert!(s.locked_until("B").is_none());
        s.succeeded("Dr. A");
        assert!(s.locked_until("Dr. A").is_none());
        assert_eq!(s.failed("Dr. A").count, 1);
        // A quiet hour forgets earlier failures.
        clock.advance_ms(3_600_000);
        assert_eq!(s.failed("Dr. A").count, 1);
    }

    #[test]
    fn tokens_and_cookies() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("", ""));
        assert!(!same_token("abc", "abcd"));
        assert_eq!(
            cookie("k", Some("v")),
            "k=v; Path=/; HttpOnly; Secure; SameSite=Strict"
        );
        assert!(cookie("k", None).ends_with("Max-Age=0"));
        let mut h = http::HeaderMap::new();
        h.append(
            http::header::COOKIE,
            "a=1; custodian-session=xyz".parse().unwrap(),
        );
        h.append(http::header::COOKIE, "b=2".parse().unwrap());
        assert_eq!(cookie_value(&h, SESSION_COOKIE), Some("xyz"));
        assert_eq!(cookie_value(&h, "b"), Some("2"));
        assert_eq!(cookie_value(&h, "c"), None);
    }
}
