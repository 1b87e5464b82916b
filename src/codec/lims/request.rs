//! The `request` document (`schemas/request.xsd`): a written request about a specimen that the
//! laboratory received (a letter, a fax, a form) and recorded in the LIMS: retention extension
//! or release (40.99(c), 40.109(c)), the MRO's request for quantitation (40.97(e)), the MRO's
//! request to test the split specimen (40.171(c)), the MRO's request to test the primary for the
//! adulterant found in the split (40.187(f)(4)).

use super::check::{Cursor, Enumerated, pattern, text};
use super::error::{Rule, XmlError};
use super::tree::Node;
use super::value::{self, Date, DateTime, IDENTIFIER_PATTERN, SPECIMEN_ID_PATTERN, SpecimenId};
use crate::domain::retention::{Requester, Subject};

impl Enumerated for Requester {
    const VALUES: &'static [&'static str] = &["mro", "employee", "employer", "dot-agency"];
    fn from_token(t: &str) -> Option<Self> {
        match t {
            "mro" => Some(Requester::Mro),
            "employee" => Some(Requester::Employee),
            "employer" => Some(Requester::Employer),
            "dot-agency" => Some(Requester::DotAgency),
            _ => None,
        }
    }
}

impl Enumerated for Subject {
    const VALUES: &'static [&'static str] = &["specimen", "records"];
    fn from_token(t: &str) -> Option<Self> {
        match t {
            "specimen" => Some(Subject::Specimen),
            "records" => Some(Subject::Records),
            _ => None,
        }
    }
}

/// Until when a retention extension asks to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestUntil {
    /// Through the end of this date (laboratory time).
    Date(Date),
    /// Until released in writing.
    Released,
}

/// What a `request` asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestAsk {
    RetentionExtension {
        requester: Requester,
        subject: Subject,
        until: RequestUntil,
    },
    RetentionRelease {
        requester: Requester,
        request_ref: String,
    },
    Quantitation,
    SplitTest {
        second_laboratory: String,
    },
    /// 40.187(f)(4): the 40.95 criterion the split laboratory reported, and the substance for
    /// an identified adulterant.
    AdulterantRetest {
        cite: String,
        remark: String,
        substance: Option<String>,
    },
}

/// A `request` document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestDoc {
    pub specimen_id: SpecimenId,
    /// The document that carries the request (an `Identifier`).
    pub document_ref: String,
    /// When the laboratory received the written request.
    pub received_at: DateTime,
    /// Who recorded it; at most 100 characters.
    pub recorded_by: String,
    pub ask: RequestAsk,
}

const ASKS: &[&str] = &[
    "retention-extension",
    "retention-release",
    "quantitation",
    "split-test",
    "adulterant-retest",
];

pub(crate) fn from_tree(root: &Node) -> Result<RequestDoc, XmlError> {
    let mut c = Cursor::open(root, "/request".to_string(), &[])?;
    let specimen_id = c.value("specimen-id", |s| {
        SpecimenId::new(s).ok_or(Rule::Pattern(SPECIMEN_ID_PATTERN))
    })?;
    let document_ref = c.value(
        "document-ref",
        pattern(value::is_identifier, IDENTIFIER_PATTERN),
    )?;
    let received_at = c.date_time("received-at")?;
    let recorded_by = c.value("recorded-by", text(100))?;
    let leaf = c.choice(
        ASKS,
        "retention-extension|retention-release|quantitation|split-test|adulterant-retest",
    )?;
    let mut inner = Cursor::open(leaf.node, leaf.path.clone(), &[])?;
    let ask = match leaf.node.name {
        "retention-extension" => {
            let requester = inner.token::<Requester>("requester")?;
            let subject = inner.token::<Subject>("subject")?;
            let until = inner.choice(&["until", "until-released"], "until|until-released")?;
            let until = if until.node.name == "until" {
                RequestUntil::Date(until.value(&[], Date::parse)?)
            } else {
                Cursor::open(until.node, until.path.clone(), &[])?.finish()?;
                RequestUntil::Released
            };
            RequestAsk::RetentionExtension {
                requester,
                subject,
                until,
            }
        }
        "retention-release" => RequestAsk::RetentionRelease {
            requester: inner.token::<Requester>("requester")?,
            request_ref: inner.value(
                "request-ref",
                pattern(value::is_identifier, IDENTIFIER_PATTERN),
            )?,
        },
        "quantitation" => RequestAsk::Quantitation,
        "adulterant-retest" => RequestAsk::AdulterantRetest {
            cite: inner.value("cite", text(100))?,
            remark: inner.value("remark", text(100))?,
            substance: inner.opt_value("substance", text(64))?,
        },
        _ => RequestAsk::SplitTest {
            second_laboratory: inner.value("second-laboratory", text(100))?,
        },
    };
    inner.finish()?;
    c.finish()?;
    Ok(RequestDoc {
        specimen_id,
        document_ref,
        received_at,
        recorded_by,
        ask,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::lims::{DEFAULT_MAX_BYTES, parse_request};

    const EXAMPLE: &str = include_str!("../../../tests/data/lims/request-example.xml");
    const SPLIT: &str = include_str!("../../../tests/data/lims/request-split-example.xml");
    const RETEST: &str =
        include_str!("../../../tests/data/lims/request-adulterant-retest-example.xml");

    fn parse(s: &str) -> Result<RequestDoc, XmlError> {
        parse_request(s.as_bytes(), DEFAULT_MAX_BYTES)
    }

    fn with(from: &str, to: &str) -> String {
        assert_eq!(EXAMPLE.matches(from).count(), 1, "{from}");
        EXAMPLE.replace(from, to)
    }

    fn check(doc: &str, line: u32, path: &str, rule: Rule) {
        let e = parse(doc).expect_err("should be refused");
        assert_eq!(
            (e.line, e.path.as_str(), &e.rule),
            (line, path, &rule),
            "{e}"
        );
    }

    #[test]
    fn examples_parse() {
        let r = parse(EXAMPLE).unwrap();
        assert_eq!(r.specimen_id.as_str(), "X0000001-TEST");
        assert_eq!(r.document_ref, "MRO-LTR-2026-0007");
        assert_eq!(r.received_at.to_string(), "2026-06-01T14:00:00Z");
        assert_eq!(
            r.ask,
            RequestAsk::RetentionExtension {
                requester: Requester::Mro,
                subject: Subject::Specimen,
                until: RequestUntil::Date(Date::parse("2027-12-31").unwrap()),
            }
        );
        let s = parse(SPLIT).unwrap();
        assert_eq!(
            s.ask,
            RequestAsk::SplitTest {
                second_laboratory: "Second Example Laboratory".into()
            }
        );
        let r = parse(RETEST).unwrap();
        assert_eq!(r.document_ref, "MRO-LTR-2026-0420");
        assert_eq!(
            r.ask,
            RequestAsk::AdulterantRetest {
                cite: "40.95(a)(2), HHS criteria".into(),
                remark: "nitrite 500 mcg/mL or more".into(),
                substance: None,
            }
        );
    }

    #[test]
    fn every_ask() {
        let open = "<retention-extension>\n    <requester>mro</requester>\n    <subject>specimen</subject>\n    <until>2027-12-31</until>\n  </retention-extension>";
        let cases = [
            (
                "<retention-extension><requester>employer</requester><subject>records</subject><until-released/></retention-extension>",
                RequestAsk::RetentionExtension {
                    requester: Requester::Employer,
                    subject: Subject::Records,
                    until: RequestUntil::Released,
                },
            ),
            (
                "<retention-release><requester>dot-agency</requester><request-ref>DOT-1</request-ref></retention-release>",
                RequestAsk::RetentionRelease {
                    requester: Requester::DotAgency,
                    request_ref: "DOT-1".into(),
                },
            ),
            ("<quantitation/>", RequestAsk::Quantitation),
            (
                "<adulterant-retest><cite>40.95(b)</cite><remark>glutaraldehyde identified</remark><substance>glutaraldehyde</substance></adulterant-retest>",
                RequestAsk::AdulterantRetest {
                    cite: "40.95(b)".into(),
                    remark: "glutaraldehyde identified".into(),
                    substance: Some("glutaraldehyde".into()),
                },
            ),
        ];
        for (xml, ask) in cases {
            assert_eq!(parse(&with(open, xml)).unwrap().ask, ask, "{xml}");
        }
    }

    #[test]
    fn refusals_name_line_and_path() {
        check(
            &with("<requester>mro", "<requester>donor"),
            9,
            "/request/retention-extension/requester",
            Rule::NotInEnumeration(Requester::VALUES),
        );
        check(
            &with("<until>2027-12-31</until>", "<until>2027-02-30</until>"),
            11,
            "/request/retention-extension/until",
            Rule::InvalidDate,
        );
        check(
            &with("MRO-LTR-2026-0007", "letter #7"),
            5,
            "/request/document-ref",
            Rule::Pattern(IDENTIFIER_PATTERN),
        );
        let e = parse(&with(
            "<until>2027-12-31</until>",
            "<until-released>x</until-released>",
        ))
        .unwrap_err();
        assert_eq!(e.rule, Rule::TextNotAllowed, "{e}");
        let e = parse(&with("<subject>specimen</subject>\n", "")).unwrap_err();
        assert_eq!(e.path, "/request/retention-extension/until", "{e}");
        let e = parse(&EXAMPLE.replace(
            "  </retention-extension>\n",
            "  </retention-extension>\n  <quantitation/>\n",
        ))
        .unwrap_err();
        assert_eq!(e.path, "/request/quantitation", "{e}");
    }
}
