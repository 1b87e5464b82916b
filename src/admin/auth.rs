//! People and roles for the admin interface. API tokens (for machines and the CLI) are stored
//! only as SHA-256 hashes; a request carries the token as `Authorization: Bearer <token>`.
//! Console passwords (for people, and for their signatures) are stored only as Argon2id PHC
//! strings (`custodian hash-password`). Every refusal is audited by the caller.

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
    /// Hex SHA-256 of the user's API token (`custodian hash-token` prints it), for the CLI and
    /// machines.
    #[serde(default)]
    pub token_sha256: Option<String>,
    /// The Argon2id PHC string of the user's console password (`custodian hash-password`
    /// prints it): signing in and every signature in the console.
    #[serde(default)]
    pub password_argon2: Option<String>,
}

/// An authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub role: Role,
}

/// The configured users, looked up by token hash in constant time, or by name and password.
#[derive(Debug, Clone, Default)]
pub struct Users {
    entries: Vec<([u8; 32], User)>,
    /// Users with a console password: the user and the PHC string.
    passwords: Vec<(User, String)>,
    /// Every configured user (with or without a password), by name.
    people: Vec<User>,
}

/// An Argon2id hash (default parameters) of no one's password: verified against when the name
/// is unknown, so that an unknown name takes as long to refuse as a wrong password.
const DUMMY_PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXRoaW5nIGVsc2U$9Wc6u0YX3EJg6ZpAi5JdO5dmBZlM7L7cb0S3V9Zz0xA";

/// Hashes a console password as an Argon2id PHC string (default parameters, random salt).
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::password_hash::PasswordHasher;
    argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

/// Whether `password` matches a PHC string (parameters from the string).
pub fn verify_password(phc: &str, password: &str) -> bool {
    use argon2::password_hash::{PasswordVerifier, phc::PasswordHash};
    match PasswordHash::new(phc) {
        Ok(h) => argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

/// Why a configured PHC string is not usable, if it is not.
fn phc_problem(phc: &str) -> Option<String> {
    use argon2::password_hash::phc::PasswordHash;
    match PasswordHash::new(phc) {
        Ok(h) if h.algorithm.as_str() == "argon2id" => None,
        Ok(h) => Some(format!(
            "must be an Argon2id hash, not {} (custodian hash-password prints one)",
            h.algorithm.as_str()
        )),
        Err(_) => Some(
            "must be an Argon2id PHC string ($argon2id$v=19$...) as custodian hash-password prints it"
                .into(),
        ),
    }
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
        let mut passwords = Vec::new();
        let mut people = Vec::new();
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
            let user = User {
                name: u.name.clone(),
                role: u.role,
            };
            people.push(user.clone());
            if u.token_sha256.is_none() && u.password_argon2.is_none() {
                problems.push((
                    format!("admin.user[{i}]"),
                    "needs token_sha256 (API and CLI) or password_argon2 (console), or both".into(),
                ));
            }
            if let Some(phc) = &u.password_argon2 {
                match phc_problem(phc) {
                    None => passwords.push((user.clone(), phc.clone())),
                    Some(p) => problems.push((format!("admin.user[{i}].password_argon2"), p)),
                }
            }
            let Some(token) = &u.token_sha256 else {
                continue;
            };
            match parse_hex32(&token.to_ascii_lowercase()) {
                Some(h) => {
                    if entries.iter().any(|(e, _): &([u8; 32], User)| *e == h) {
                        problems.push((
                            format!("admin.user[{i}].token_sha256"),
                            "the same token is configured twice".into(),
                        ));
                    }
                    entries.push((h, user))
                }
                None => problems.push((
                    format!("admin.user[{i}].token_sha256"),
                    "must be 64 hex digits (custodian hash-token prints it)".into(),
                )),
            }
        }
        if problems.is_empty() {
            Ok(Users {
                entries,
                passwords,
                people,
            })
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

    /// The configured user of this name (compared as configured names are), if any.
    pub fn by_name(&self, name: &str) -> Option<User> {
        self.people
            .iter()
            .find(|u| same_name(&u.name, name))
            .cloned()
    }

    /// Checks a console password: `Known(Some(user))` when it is the user's, `Known(None)` when
    /// the name is a configured user's but the password is wrong (or the user has no console
    /// password), `Unknown` when no user has the name. An unknown name costs one Argon2id
    /// verification too.
    pub fn check_password(&self, name: &str, password: &str) -> PasswordCheck {
        match self
            .passwords
            .iter()
            .find(|(u, _)| same_name(&u.name, name))
        {
            Some((u, phc)) => {
                if verify_password(phc, password) {
                    PasswordCheck::Known(Some(u.clone()))
                } else {
                    PasswordCheck::Known(None)
                }
            }
            None => {
                let _ = verify_password(DUMMY_PHC, password);
                match self.by_name(name) {
                    Some(_) => PasswordCheck::Known(None),
                    None => PasswordCheck::Unknown,
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The outcome of [`Users::check_password`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordCheck {
    /// A configured user's name: `Some` if the password is right.
    Known(Option<User>),
    /// No configured user has the name.
    Unknown,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(name: &str, role: Role, token: &str) -> UserConfig {
        UserConfig {
            name: name.into(),
            role,
            token_sha256: Some(hash_token(token)),
            password_argon2: None,
        }
    }

    #[test]
    fn passwords_are_argon2id_and_checked_by_name() {
        let phc = hash_password("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$"), "{phc}");
        let mut a = cfg("Dr. A", Role::CertifyingScientist, "t1");
        a.password_argon2 = Some(phc.clone());
        let mut b = cfg("B", Role::Viewer, "t2");
        b.token_sha256 = None;
        b.password_argon2 = Some(hash_password("other").unwrap());
        let users = Users::from_config(&[a, b, cfg("C", Role::Operator, "t3")]).unwrap();
        assert_eq!(
            users.check_password("dr.  a", "correct horse"),
            PasswordCheck::Known(Some(User {
                name: "Dr. A".into(),
                role: Role::CertifyingScientist
            }))
        );
        assert_eq!(
            users.check_password("Dr. A", "correct horsE"),
            PasswordCheck::Known(None)
        );
        // A user without a console password is known, and never signs in.
        assert_eq!(users.check_password("C", ""), PasswordCheck::Known(None));
        assert_eq!(users.check_password("Nobody", "x"), PasswordCheck::Unknown);
        assert_eq!(users.by_name("b").unwrap().role, Role::Viewer);
        // The dummy hash is a well-formed Argon2id string.
        assert!(phc_problem(DUMMY_PHC).is_none());
        assert!(!verify_password(DUMMY_PHC, "x"));
    }

    #[test]
    fn bad_password_hashes_and_users_without_credentials_are_named() {
        let mut a = cfg("A", Role::Viewer, "t1");
        a.password_argon2 = Some("plaintext".into());
        let mut b = cfg("B", Role::Viewer, "t2");
        b.token_sha256 = None;
        let mut c = cfg("C", Role::Viewer, "t3");
        c.password_argon2 =
            Some("$argon2i$v=19$m=16,t=2,p=1$c29tZXNhbHQ$8Zlrj3hu2Z3qKj2dlvxa0A".into());
        let e = Users::from_config(&[a, b, c]).unwrap_err();
        let keys: Vec<_> = e.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "admin.user[0].password_argon2",
                "admin.user[1]",
                "admin.user[2].password_argon2"
            ],
            "{e:?}"
        );
        assert!(e[2].1.contains("not argon2i"), "{e:?}");
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
        bad.token_sha256 = Some("abc".into());
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
