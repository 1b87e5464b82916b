//! What a viewer may not see: donor identifiers (the SSN or employee ID of the CCF, wherever a
//! record, a report or a correction carries it) and the certified Copy 1, whose image shows
//! them. Applied to every JSON answer of the API to a viewer, and to what the console shows one.

/// What stands in a withheld value's place.
pub const WITHHELD: &str = "(withheld: the viewer role does not see donor identifiers)";

/// Keys whose value is a donor identifier.
const DONOR_KEYS: [&str; 3] = ["donor_id", "ssn", "employee_id"];

/// Replaces every donor identifier and the data of every certified Copy 1 in `v`.
pub fn donor_identifiers(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if DONOR_KEYS.contains(&k.as_str()) {
                    if !x.is_null() {
                        *x = Value::String(WITHHELD.into());
                    }
                } else if k == "ccf_copy1" || k == "copy1_image" {
                    match x {
                        Value::Object(c) => {
                            if let Some(d) = c.get_mut("data") {
                                *d = Value::String(WITHHELD.into());
                            }
                            donor_identifiers(x);
                        }
                        Value::Null => {}
                        other => *other = Value::String(WITHHELD.into()),
                    }
                } else if k == "raw_base64" || k == "jws" {
                    *x = Value::String(WITHHELD.into());
                } else {
                    donor_identifiers(x);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(donor_identifiers),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn donor_identifiers_are_withheld_wherever_they_are() {
        let mut v = serde_json::json!({
            "specimen_id": "S1",
            "accession": {"ccf": {"donor_id": "123-45-6789", "employer": {"name": "E"}}},
            "report_corrections": [{"previous": {"donor_id": "987-65-4321", "collected_on": "x"}}],
            "draft_report": {"donor_id": null, "ccf_copy1": {"media_type": "application/pdf", "sha256": "ab", "data": "JVBERi0="}},
            "reports": [{"jws": "a.b.c"}],
        });
        donor_identifiers(&mut v);
        let text = v.to_string();
        for secret in ["123-45-6789", "987-65-4321", "JVBERi0=", "a.b.c"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_eq!(v["accession"]["ccf"]["donor_id"], WITHHELD);
        assert_eq!(v["accession"]["ccf"]["employer"]["name"], "E");
        assert!(
            v["draft_report"]["donor_id"].is_null(),
            "absent stays absent"
        );
        assert_eq!(v["draft_report"]["ccf_copy1"]["sha256"], "ab");
        assert_eq!(v["report_corrections"][0]["previous"]["collected_on"], "x");
    }
}
