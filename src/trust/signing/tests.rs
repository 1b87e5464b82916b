use super::*;
use std::os::unix::fs::PermissionsExt;

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(s: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(s).unwrap()
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// RFC 8037 Appendix A: the Ed25519 key, its thumbprint (A.3) and the signature (A.4).
#[test]
fn rfc8037_test_vectors() {
    let d = unb64("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A");
    let x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
    assert_eq!(thumbprint(x), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");

    // PKCS#8 v1 (RFC 8410) around the private key.
    let mut pkcs8 = hex("302e020100300506032b657004220420");
    pkcs8.extend_from_slice(&d);
    let key = SigningKey::from_pkcs8(&pkcs8).expect("RFC 8037 key loads");
    assert_eq!(key.public_jwk().x, x);
    assert_eq!(key.kid(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");

    let input = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc";
    let sig = key.pair.sign(input.as_bytes());
    assert_eq!(
        b64(sig.as_ref()),
        "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
    );
    // The RFC's JWS carries no kid: a key set entry without kid is known by its thumbprint.
    let rfc_jws = format!("{input}.{}", b64(sig.as_ref()));
    let bare = JwkSet::parse(&format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{x}"}}"#)).unwrap();
    assert_eq!(verify(&rfc_jws, &bare), Err(VerifyError::NoKid));
    let header = b64(format!(r#"{{"alg":"EdDSA","kid":"{}"}}"#, key.kid()).as_bytes());
    let input = format!("{header}.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc");
    let with_kid = format!("{input}.{}", b64(key.pair.sign(input.as_bytes()).as_ref()));
    assert_eq!(
        verify(&with_kid, &bare).unwrap(),
        b"Example of Ed25519 signing"
    );
}

#[test]
fn sign_verify_round_trip() {
    let (key, pkcs8) = SigningKey::generate().unwrap();
    assert!(is_kid(key.kid()));
    assert_eq!(
        SigningKey::from_pkcs8(pkcs8.as_bytes()).unwrap().kid(),
        key.kid()
    );
    let payload = br#"{"report_id":"R-1","results":["negative"]}"#;
    let jws = key.sign(payload);
    let parts: Vec<&str> = jws.split('.').collect();
    assert_eq!(parts.len(), 3);
    assert!(!jws.contains('=') && !jws.contains('+') && !jws.contains('/'));
    let header: serde_json::Value = serde_json::from_slice(&unb64(parts[0])).unwrap();
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["kid"], key.kid());
    assert_eq!(unb64(parts[1]), payload);
    assert_eq!(unb64(parts[2]).len(), 64);

    let jwk = key.public_jwk();
    assert_eq!(jwk.thumbprint(), key.kid());
    let set = JwkSet { keys: vec![jwk] };
    assert_eq!(verify(&jws, &set).unwrap(), payload);
    assert_eq!(verify(&format!("{jws}\n"), &set).unwrap(), payload);
}

fn replace_part(jws: &str, i: usize, new: &str) -> String {
    let mut parts: Vec<String> = jws.split('.').map(str::to_string).collect();
    parts[i] = new.to_string();
    parts.join(".")
}

#[test]
fn tampering_is_refused() {
    let (key, _) = SigningKey::generate().unwrap();
    let set = JwkSet {
        keys: vec![key.public_jwk()],
    };
    let jws = key.sign(br#"{"results":["negative"]}"#);
    let kid = key.kid().to_string();

    let payload = replace_part(&jws, 1, &b64(br#"{"results":["positive"]}"#));
    assert_eq!(
        verify(&payload, &set),
        Err(VerifyError::Signature(kid.clone()))
    );

    let header = format!(r#"{{"alg":"EdDSA","kid":"{kid}","typ":"JWT"}}"#);
    let header = replace_part(&jws, 0, &b64(header.as_bytes()));
    assert_eq!(
        verify(&header, &set),
        Err(VerifyError::Signature(kid.clone()))
    );

    let mut sig = unb64(jws.rsplit('.').next().unwrap());
    sig[10] ^= 1;
    let signature = replace_part(&jws, 2, &b64(&sig));
    assert_eq!(
        verify(&signature, &set),
        Err(VerifyError::Signature(kid.clone()))
    );
    let short = replace_part(&jws, 2, &b64(&sig[..63]));
    assert_eq!(
        verify(&short, &set),
        Err(VerifyError::Signature(kid.clone()))
    );

    for alg in [r#""none""#, r#""HS256""#, r#""ES256""#, "null"] {
        let h = format!(r#"{{"alg":{alg},"kid":"{kid}"}}"#);
        let t = replace_part(&jws, 0, &b64(h.as_bytes()));
        assert!(
            matches!(verify(&t, &set), Err(VerifyError::Algorithm(_))),
            "alg {alg} accepted"
        );
    }
    let no_alg = replace_part(&jws, 0, &b64(format!(r#"{{"kid":"{kid}"}}"#).as_bytes()));
    assert_eq!(verify(&no_alg, &set), Err(VerifyError::Algorithm(None)));
    let crit = format!(r#"{{"alg":"EdDSA","kid":"{kid}","crit":["b64"],"b64":false}}"#);
    let crit = replace_part(&jws, 0, &b64(crit.as_bytes()));
    assert!(matches!(verify(&crit, &set), Err(VerifyError::Critical(_))));
}

#[test]
fn malformed_tokens_are_refused() {
    let (key, _) = SigningKey::generate().unwrap();
    let set = JwkSet {
        keys: vec![key.public_jwk()],
    };
    let jws = key.sign(b"{}");
    for bad in [
        String::new(),
        "a.b".to_string(),
        format!("{jws}.x"),
        replace_part(&jws, 2, ""),
        replace_part(&jws, 0, ""),
        format!("{jws}="),
        replace_part(&jws, 1, "e30="),
        replace_part(&jws, 0, "!!!"),
    ] {
        assert!(
            matches!(
                verify(&bad, &set),
                Err(VerifyError::Malformed(_) | VerifyError::Signature(_))
            ),
            "{bad:?} accepted or wrongly reported: {:?}",
            verify(&bad, &set)
        );
    }
    let not_json = replace_part(&jws, 0, &b64(b"alg=EdDSA"));
    assert_eq!(verify(&not_json, &set), Err(VerifyError::BadHeader));
    let array = replace_part(&jws, 0, &b64(b"[1]"));
    assert_eq!(verify(&array, &set), Err(VerifyError::BadHeader));
}

#[test]
fn wrong_kid_is_refused() {
    let (a, _) = SigningKey::generate().unwrap();
    let (b, _) = SigningKey::generate().unwrap();
    let only_b = JwkSet {
        keys: vec![b.public_jwk()],
    };
    let jws = a.sign(b"{}");
    assert_eq!(
        verify(&jws, &only_b),
        Err(VerifyError::UnknownKid(a.kid().to_string()))
    );
    // A's signature under a header that claims B's kid.
    let header = b64(format!(r#"{{"alg":"EdDSA","kid":"{}"}}"#, b.kid()).as_bytes());
    let payload = b64(b"{}");
    let input = format!("{header}.{payload}");
    let forged = format!("{input}.{}", b64(a.pair.sign(input.as_bytes()).as_ref()));
    assert_eq!(
        verify(&forged, &only_b),
        Err(VerifyError::Signature(b.kid().to_string()))
    );
    let no_kid = replace_part(&jws, 0, &b64(br#"{"alg":"EdDSA"}"#));
    assert_eq!(
        verify(
            &no_kid,
            &JwkSet {
                keys: vec![a.public_jwk()]
            }
        ),
        Err(VerifyError::NoKid)
    );
}

#[test]
fn keys_not_for_eddsa_signing_are_refused() {
    let (key, _) = SigningKey::generate().unwrap();
    let jws = key.sign(b"{}");
    let mut jwk = key.public_jwk();
    jwk.alg = Some("RS256".into());
    assert!(matches!(
        verify(&jws, &JwkSet { keys: vec![jwk] }),
        Err(VerifyError::BadKey(_))
    ));
    let mut jwk = key.public_jwk();
    jwk.use_ = Some("enc".into());
    assert!(matches!(
        verify(&jws, &JwkSet { keys: vec![jwk] }),
        Err(VerifyError::BadKey(_))
    ));
    let mut jwk = key.public_jwk();
    jwk.crv = "X25519".into();
    assert!(matches!(
        verify(&jws, &JwkSet { keys: vec![jwk] }),
        Err(VerifyError::BadKey(_))
    ));
    let mut jwk = key.public_jwk();
    jwk.x = b64(&[1u8; 31]);
    assert!(matches!(
        verify(&jws, &JwkSet { keys: vec![jwk] }),
        Err(VerifyError::BadKey(_))
    ));
}

#[test]
fn jwk_and_jwk_set_parse() {
    let (key, _) = SigningKey::generate().unwrap();
    let one = serde_json::to_string(&key.public_jwk()).unwrap();
    assert!(one.contains(r#""use":"sig""#) && one.contains(r#""kty":"OKP""#));
    assert_eq!(JwkSet::parse(&one).unwrap().keys, [key.public_jwk()]);
    let set = serde_json::to_string(&JwkSet {
        keys: vec![key.public_jwk()],
    })
    .unwrap();
    assert_eq!(JwkSet::parse(&set).unwrap().keys.len(), 1);
    assert!(JwkSet::parse("not json").is_err());
    assert!(JwkSet::parse(r#"{"keys":3}"#).is_err());
    assert!(JwkSet::parse(r#"{"kty":"OKP"}"#).is_err());
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn generate_stores_a_private_key_and_makes_it_active() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("keys");
    let store = KeyStore::new(&dir);
    assert!(matches!(store.active(), Err(KeyError::NoActiveKey(_))));
    let kid = store.generate().unwrap();
    assert_eq!(mode(&dir), 0o700);
    let file = dir.join(format!("{kid}.pk8"));
    assert_eq!(mode(&file), 0o600);
    assert_eq!(
        std::fs::read_to_string(dir.join(ACTIVE_FILE)).unwrap(),
        format!("{kid}\n")
    );
    assert_eq!(store.active().unwrap().kid(), kid);
    assert_eq!(store.kids().unwrap(), std::slice::from_ref(&kid));
    assert!(store.check_permissions().is_empty());
}

#[test]
fn rotation_keeps_old_reports_verifiable() {
    let d = tempfile::tempdir().unwrap();
    let store = KeyStore::new(d.path());
    let old = store.generate().unwrap();
    let old_report = store.active().unwrap().sign(br#"{"report_id":"R-old"}"#);
    let new = store.generate().unwrap();
    assert_ne!(old, new);
    assert_eq!(store.active_kid().unwrap(), new);
    let new_report = store.active().unwrap().sign(br#"{"report_id":"R-new"}"#);

    let set = store.public_set().unwrap();
    assert_eq!(set.keys.len(), 2);
    assert_eq!(
        verify(&old_report, &set).unwrap(),
        br#"{"report_id":"R-old"}"#
    );
    assert_eq!(
        verify(&new_report, &set).unwrap(),
        br#"{"report_id":"R-new"}"#
    );

    let only_new = JwkSet {
        keys: vec![store.active().unwrap().public_jwk()],
    };
    assert_eq!(
        verify(&old_report, &only_new),
        Err(VerifyError::UnknownKid(old.clone()))
    );
    store.set_active(&old).unwrap();
    assert_eq!(store.active_kid().unwrap(), old);
}

#[test]
fn group_or_world_readable_keys_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let store = KeyStore::new(d.path());
    let kid = store.generate().unwrap();
    let file = d.path().join(format!("{kid}.pk8"));
    for bad in [0o640, 0o604, 0o660, 0o620, 0o601] {
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(bad)).unwrap();
        let e = store.active().unwrap_err();
        assert!(
            matches!(&e, KeyError::Permissions { path, mode } if *path == file && *mode == bad),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(msg.contains(&file.display().to_string()), "{msg}");
        assert!(msg.contains(&format!("{bad:04o}")), "{msg}");
        assert!(store.public_set().is_err());
        let problems = store.check_permissions();
        assert_eq!(problems.len(), 1);
        assert!(problems[0].to_string().contains(&kid));
    }
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o400)).unwrap();
    assert_eq!(store.active().unwrap().kid(), kid);
}

#[test]
fn a_key_file_under_a_wrong_name_or_a_bad_pointer_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let store = KeyStore::new(d.path());
    let a = store.generate().unwrap();
    let b = store.generate().unwrap();
    let pa = d.path().join(format!("{a}.pk8"));
    let pb = d.path().join(format!("{b}.pk8"));
    let tmp = d.path().join("swap");
    std::fs::rename(&pa, &tmp).unwrap();
    std::fs::rename(&pb, &pa).unwrap();
    std::fs::rename(&tmp, &pb).unwrap();
    assert!(matches!(store.load(&a), Err(KeyError::KidMismatch { actual, .. }) if actual == b));

    std::fs::write(d.path().join(ACTIVE_FILE), "../../etc/shadow\n").unwrap();
    assert!(matches!(store.active(), Err(KeyError::BadKid { .. })));
    assert!(matches!(store.load("../x"), Err(KeyError::BadKid { .. })));

    let junk = d.path().join(format!("{}.pk8", "A".repeat(43)));
    std::fs::write(&junk, b"not a key").unwrap();
    std::fs::set_permissions(&junk, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(matches!(store.load(&"A".repeat(43)), Err(KeyError::NotAKey(p)) if p == junk));
}

#[test]
fn key_material_is_never_displayed() {
    let (key, pkcs8) = SigningKey::generate().unwrap();
    let shown = format!("{key:?} {pkcs8:?}");
    assert!(shown.contains(key.kid()));
    let secret_b64 = b64(pkcs8.as_bytes());
    assert!(!shown.contains(&secret_b64[..20]));
    assert!(!shown.contains(&format!("{:?}", &pkcs8.as_bytes()[..8])));
    assert_eq!(format!("{pkcs8:?}"), "Pkcs8(..)");
}
