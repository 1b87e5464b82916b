//! People and roles for the admin interface. Tokens are stored only as SHA-256 hashes; a request
//! carries the token as `Authorization: Bearer <token>`. Every refusal is audited by the caller.

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reviews and releases results (40.97(b)(1)(ii)); may also do what an operator does.
    CertifyingScientist,
    /// Runs the laboratory's operations (e.g. retries, discards); cannot release.
    Operator,
    /// Reads only.
    Viewer,
}

/// What an action requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    Read,
    Operate,
    Release,
}

impl Role {
    pub fn may(self, p: Permission) -> bool {
        matches!(
            (self, p),
            (_, Permission::Read)
                | (
                    Role::CertifyingScientist | Role::Operator,
                    Permission::Operate
                )
                | (Role::CertifyingScientist, Permission::Release)
        )
    }
    pub fn key(self) -> &'static str {
        match self {
            Role::CertifyingScientist => "certifying_scientist",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
        }
    }
}

/// Whether two configured names are the same person's: compared without case and with runs of
/// whitespace as one space.
fn same_name(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        s.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase()
    };
    norm(a) == norm(b)
}

/// A user as configured.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The person's name as it appears on a release (40.97(b)(1)(i)(K)).
    pub name: String,
    pub role: Role,
    /// Hex SHA-256 of the user's token (`custodian hash-token` prints it).
    pub token_sha256: String,
}

/// An authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub role: Role,
}

/// The configured users, looked up by token hash in constant time.
#[derive(Debug, Clone, Default)]
pub struct Users {
    entries: Vec<([u8; 32], User)>,
}

/// Hex SHA-256 of a token.
pub fn hash_token(token: &str) -> String {
    let d = Sha256::digest(token.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let t = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(t, 16).ok()?;
    }
    Some(out)
}

impl Users {
    /// Builds the table; returns (key, problem) pairs for bad entries.
    pub fn from_config(users: &[UserConfig]) -> Result<Users, Vec<(String, String)>> {
        let mut problems = Vec::new();
        let mut entries = Vec::new();
        for (i, u) in users.iter().enumerate() {
            if u.name.trim().is_empty() {
                problems.push((format!("admin.user[{i}].name"), "must not be empty".into()));
            } else if let Some(j) = users[..i].iter().position(|o| same_name(&o.name, &u.name)) {
                // A signature must name one person: two entries with one name (even with
                // different tokens or roles) would make a release ambiguous.
                problems.push((
                    format!("admin.user[{i}].name"),
                    format!("the same name as admin.user[{j}]: a signature must name one person"),
                ));
            }
            match parse_hex32(&u.token_sha256.to_ascii_lowercase()) {
                Some(h) => {
                    if entries.iter().any(|(e, _): &([u8; 32], User)| *e == h) {
                        problems.push((
                            format!("admin.user[{i}].token_sha256"),
                            "the same token is configured twice".into(),
                        ));
                    }
                    entries.push((
                        h,
                        User {
                            name: u.name.clone(),
                            role: u.role,
                        },
                    ))
                }
                None => problems.push((
                    format!("admin.user[{i}].token_sha256"),
                    "must be 64 hex digits (custodian hash-token prints it)".into(),
                )),
            }
        }
        if problems.is_empty() {
            Ok(Users { entries })
        } else {
            Err(problems)
        }
    }

    /// The user whose token this is, if any. Every entry is compared, in constant time.
    pub fn authenticate(&self, token: &str) -> Option<User> {
        let d = Sha256::digest(token.as_bytes());
        let mut found = None;
        for (h, u) in &self.entries {
            if bool::from(h.as_slice().ct_eq(d.as_slice())) {
                found = Some(u.clone());
            }
        }
        found
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(name: &str, role: Role, token: &str) -> UserConfig {
        UserConfig {
            name: name.into(),
            role,
            token_sha256: hash_token(token),
        }
    }

    #[test]
    fn tokens_authenticate_by_hash_only() {
        let users = Users::from_config(&[
            cfg("Dr. A", Role::CertifyingScientist, "secret-a"),
            cfg("B", Role::Viewer, "secret-b"),
        ])
        .unwrap();
        assert_eq!(
            users.authenticate("secret-a").unwrap().role,
            Role::CertifyingScientist
        );
        assert_eq!(users.authenticate("secret-b").unwrap().name, "B");
        assert!(users.authenticate("secret-c").is_none());
        assert!(users.authenticate("").is_none());
    }

    #[test]
    fn roles_and_permissions() {
        assert!(Role::CertifyingScientist.may(Permission::Release));
        assert!(!Role::Operator.may(Permission::Release));
        assert!(!Role::Viewer.may(Permission::Release));
        assert!(Role::Operator.may(Permission::Operate));
        assert!(!Role::Viewer.may(Permission::Operate));
        assert!(Role::Viewer.may(Permission::Read));
    }

    #[test]
    fn bad_entries_are_named() {
        let mut bad = cfg("", Role::Viewer, "x");
        bad.token_sha256 = "abc".into();
        let e = Users::from_config(&[bad]).unwrap_err();
        assert_eq!(e.len(), 2);
        let dup = Users::from_config(&[cfg("a", Role::Viewer, "t"), cfg("b", Role::Operator, "t")])
            .unwrap_err();
        assert!(dup[0].1.contains("twice"));
    }

    /// A release is signed with the user's name: two entries with one name (whatever their
    /// tokens and roles) are refused, naming the later entry.
    #[test]
    fn duplicate_names_are_refused() {
        let e = Users::from_config(&[
            cfg("Dr. A Smith", Role::CertifyingScientist, "t1"),
            cfg("B", Role::Viewer, "t2"),
            cfg("dr.  a smith", Role::Operator, "t3"),
        ])
        .unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].0, "admin.user[2].name");
        assert!(e[0].1.contains("admin.user[0]"), "{e:?}");
        assert!(
            Users::from_config(&[cfg("A", Role::Viewer, "t1"), cfg("B", Role::Viewer, "t2")])
                .is_ok()
        );
    }

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
