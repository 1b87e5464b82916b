//! The LIMS schemas and the daemon's own parsers agree.
//!
//! Every `tests/data/lims/*-example.xml` must validate with `xmllint --schema` and parse; every
//! `*-invalid-*.xml` must fail both. Then variants of the examples around each limit are
//! written to a temporary directory and both judges must agree on each, except for the few
//! documented places where the parser is stricter than XSD 1.0 can be.
//!
//! Needs `xmllint` (Debian/Ubuntu: `apt-get install -y libxml2-utils`); without it these tests
//! fail rather than pass silently.

use custodian::codec::lims::{DEFAULT_MAX_BYTES, DocumentKind, parse_document};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn data_dir() -> PathBuf {
    root().join("tests/data/lims")
}

/// The schema for a data file, from its name's prefix.
fn kind_of(file_name: &str) -> DocumentKind {
    if file_name.starts_with("confirmation-batch") {
        DocumentKind::ConfirmationBatch
    } else if file_name.starts_with("correction") {
        DocumentKind::Correction
    } else if file_name.starts_with("accession") {
        DocumentKind::Accession
    } else if file_name.starts_with("request") {
        DocumentKind::Request
    } else if file_name.starts_with("certified-copy") {
        DocumentKind::CertifiedCopy
    } else {
        panic!(
            "{file_name}: name must start with accession, confirmation-batch, correction, request or certified-copy"
        )
    }
}

fn schema(kind: DocumentKind) -> PathBuf {
    root().join("schemas").join(format!("{}.xsd", kind.root()))
}

/// Runs xmllint; `true` if the file validates. Panics if xmllint is missing or the schema
/// does not compile.
fn xmllint_valid(kind: DocumentKind, file: &Path) -> bool {
    let out = match Command::new("xmllint")
        .arg("--noout")
        .arg("--nonet")
        .arg("--schema")
        .arg(schema(kind))
        .arg(file)
        .output()
    {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "xmllint is not installed: install libxml2-utils (apt-get install -y libxml2-utils)"
        ),
        Err(e) => panic!("running xmllint: {e}"),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("failed to compile"),
        "schema for {} does not compile:\n{stderr}",
        kind.root()
    );
    out.status.success()
}

fn data_files(filter: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.ends_with(".xml") && filter(name)
        })
        .collect();
    files.sort();
    files
}

fn name(p: &Path) -> &str {
    p.file_name().unwrap().to_str().unwrap()
}

#[test]
fn xmllint_is_installed() {
    match Command::new("xmllint").arg("--version").output() {
        Ok(o) => assert!(o.status.success(), "xmllint --version failed"),
        Err(_) => panic!(
            "xmllint is not installed: install libxml2-utils (apt-get install -y libxml2-utils)"
        ),
    }
}

#[test]
fn valid_examples_pass_xmllint_and_the_parser() {
    let files = data_files(|n| n.ends_with("-example.xml"));
    assert!(files.len() >= 3, "expected an example per document");
    for kind in [
        DocumentKind::Accession,
        DocumentKind::ConfirmationBatch,
        DocumentKind::Correction,
        DocumentKind::Request,
    ] {
        assert!(
            files.iter().any(|f| kind_of(name(f)) == kind),
            "no example for {}",
            kind.root()
        );
    }
    for f in files {
        let kind = kind_of(name(&f));
        assert!(xmllint_valid(kind, &f), "{}: xmllint refuses it", name(&f));
        let bytes = std::fs::read(&f).unwrap();
        match parse_document(&bytes, DEFAULT_MAX_BYTES) {
            Ok(doc) => assert_eq!(doc.kind(), kind, "{}", name(&f)),
            Err(e) => panic!("{}: parser refuses it: {e}", name(&f)),
        }
    }
}

#[test]
fn invalid_examples_fail_xmllint_and_the_parser() {
    let files = data_files(|n| n.contains("-invalid-"));
    for kind in [
        DocumentKind::Accession,
        DocumentKind::ConfirmationBatch,
        DocumentKind::Correction,
        DocumentKind::Request,
    ] {
        assert!(
            files.iter().filter(|f| kind_of(name(f)) == kind).count() >= 3,
            "need at least three invalid examples for {}",
            kind.root()
        );
    }
    for f in files {
        let kind = kind_of(name(&f));
        assert!(!xmllint_valid(kind, &f), "{}: xmllint accepts it", name(&f));
        let bytes = std::fs::read(&f).unwrap();
        let e = parse_document(&bytes, DEFAULT_MAX_BYTES)
            .expect_err(&format!("{}: parser accepts it", name(&f)));
        assert!(e.line >= 1 && e.path.starts_with('/'), "{}: {e}", name(&f));
    }
}

/// A variant of an example: `from` (which must occur) replaced by `to`.
struct Variant {
    label: &'static str,
    example: &'static str,
    from: &'static str,
    to: String,
}

fn v(
    label: &'static str,
    example: &'static str,
    from: &'static str,
    to: impl Into<String>,
) -> Variant {
    Variant {
        label,
        example,
        from,
        to: to.into(),
    }
}

const ACC: &str = "accession-example.xml";
const BAT: &str = "confirmation-batch-example.xml";
/// The example batch's `<qc>` element, whole.
const BATCH_QC: &str = "  <qc>\n    <sample id=\"CAL-CONF\" role=\"calibrator\">\n      <result analyte=\"benzoylecgonine\" unit=\"ng/mL\">101.2</result>\n      <result analyte=\"morphine\" unit=\"ng/mL\">1984</result>\n      <result analyte=\"codeine\" unit=\"ng/mL\">2031</result>\n      <result analyte=\"6am\" unit=\"ng/mL\">9.8</result>\n    </sample>\n    <sample id=\"QC-NEG-C\" role=\"control\">\n      <result analyte=\"benzoylecgonine\" unit=\"ng/mL\">0</result>\n      <result analyte=\"morphine\" unit=\"ng/mL\">0</result>\n      <result analyte=\"codeine\" unit=\"ng/mL\">0</result>\n      <result analyte=\"6am\" unit=\"ng/mL\">0</result>\n    </sample>\n    <sample id=\"QC-POS-C\" role=\"control\">\n      <result analyte=\"benzoylecgonine\" unit=\"ng/mL\">124.7</result>\n      <result analyte=\"morphine\" unit=\"ng/mL\">2466</result>\n      <result analyte=\"codeine\" unit=\"ng/mL\">2512</result>\n      <result analyte=\"6am\" unit=\"ng/mL\">12.9</result>\n    </sample>\n  </qc>\n";
const COR: &str = "correction-example.xml";
const REQ: &str = "request-example.xml";

fn variants() -> Vec<Variant> {
    vec![
        // The request document's choices and tokens.
        v(
            "request until released",
            REQ,
            "<until>2027-12-31</until>",
            "<until-released/>",
        ),
        v(
            "request until released text",
            REQ,
            "<until>2027-12-31</until>",
            "<until-released>x</until-released>",
        ),
        v(
            "request until missing",
            REQ,
            "    <until>2027-12-31</until>\n",
            "",
        ),
        v(
            "request requester dot",
            REQ,
            "<requester>mro",
            "<requester>dot-agency",
        ),
        v(
            "request requester unknown",
            REQ,
            "<requester>mro",
            "<requester>donor",
        ),
        v(
            "request subject records",
            REQ,
            "<subject>specimen",
            "<subject>records",
        ),
        v(
            "request subject unknown",
            REQ,
            "<subject>specimen",
            "<subject>bottle",
        ),
        v(
            "request quantitation",
            REQ,
            "<retention-extension>\n    <requester>mro</requester>\n    <subject>specimen</subject>\n    <until>2027-12-31</until>\n  </retention-extension>",
            "<quantitation/>",
        ),
        v(
            "request quantitation text",
            REQ,
            "<retention-extension>\n    <requester>mro</requester>\n    <subject>specimen</subject>\n    <until>2027-12-31</until>\n  </retention-extension>",
            "<quantitation>yes</quantitation>",
        ),
        v(
            "request release",
            REQ,
            "<retention-extension>\n    <requester>mro</requester>\n    <subject>specimen</subject>\n    <until>2027-12-31</until>\n  </retention-extension>",
            "<retention-release><requester>mro</requester><request-ref>MRO-1</request-ref></retention-release>",
        ),
        v(
            "request release bad ref",
            REQ,
            "<retention-extension>\n    <requester>mro</requester>\n    <subject>specimen</subject>\n    <until>2027-12-31</until>\n  </retention-extension>",
            "<retention-release><requester>mro</requester><request-ref>MRO 1</request-ref></retention-release>",
        ),
        v(
            "request no ask",
            REQ,
            "<retention-extension>\n    <requester>mro</requester>\n    <subject>specimen</subject>\n    <until>2027-12-31</until>\n  </retention-extension>",
            "",
        ),
        v(
            "request document ref space",
            REQ,
            "MRO-LTR-2026-0007",
            "MRO LTR",
        ),
        // Specimen ID: pattern and length.
        v("specimen id 32", ACC, "X0000001-TEST", "A".repeat(32)),
        v("specimen id 33", ACC, "X0000001-TEST", "A".repeat(33)),
        v("specimen id space", ACC, "X0000001-TEST", " X0000001"),
        v("specimen id underscore", COR, "X0000001-TEST", "X_1"),
        v("specimen id empty", COR, "X0000001-TEST", ""),
        // Text lengths.
        v(
            "employer name 100",
            ACC,
            "Example Freight Lines (fictitious)",
            "é".repeat(100),
        ),
        v(
            "employer name 101",
            ACC,
            "Example Freight Lines (fictitious)",
            "é".repeat(101),
        ),
        v(
            "employer name blank",
            ACC,
            "Example Freight Lines (fictitious)",
            "  \n ",
        ),
        v(
            "remarks 2000",
            ACC,
            "Step 4 signature missing; memo requested from collector &amp; site.",
            "r".repeat(2000),
        ),
        v(
            "remarks 2001",
            ACC,
            "Step 4 signature missing; memo requested from collector &amp; site.",
            "r".repeat(2001),
        ),
        v("freezer 64", ACC, "FRZ-2/R3/B14", "f".repeat(64)),
        v("freezer 65", ACC, "FRZ-2/R3/B14", "f".repeat(65)),
        v(
            "recorded-by 101",
            COR,
            "J. Example (accessioning)",
            "j".repeat(101),
        ),
        // Identifiers, SSN, phone, profile.
        v("directory id 64", ACC, "MRO-0042", "M".repeat(64)),
        v("directory id 65", ACC, "MRO-0042", "M".repeat(65)),
        v("identifier leading dash", COR, "MEMO-2024-0042", "-MEMO"),
        v("ssn without dashes", ACC, "000-00-0000", "000000000"),
        v("ssn one dash", ACC, "000-00-0000", "000-000000"),
        v("ssn short", ACC, "000-00-0000", "000-00-000"),
        v("ssn arabic-indic digits", ACC, "000-00-0000", "٠٠٠-٠٠-٠٠٠٠"),
        v(
            "employee id",
            ACC,
            "<ssn>000-00-0000</ssn>",
            "<employee-id>E 12</employee-id>",
        ),
        v(
            "employee id 33",
            ACC,
            "<ssn>000-00-0000</ssn>",
            format!("<employee-id>{}</employee-id>", "e".repeat(33)),
        ),
        v("donor empty", ACC, "<ssn>000-00-0000</ssn>", ""),
        v("phone letters", ACC, "(555) 010-0000", "555-CALL-NOW"),
        v("phone 6", ACC, "(555) 010-0000", "555010"),
        v("profile upper", ACC, "part40-2001", "Part40"),
        // Enumerations and booleans.
        v(
            "reason padded",
            ACC,
            "<reason>random</reason>",
            "<reason> post-accident </reason>",
        ),
        v(
            "reason bad",
            ACC,
            "<reason>random</reason>",
            "<reason>Random</reason>",
        ),
        v(
            "form expired",
            ACC,
            "<form>federal</form>",
            "<form>expired-federal</form>",
        ),
        v(
            "form bad",
            ACC,
            "<form>federal</form>",
            "<form>state</form>",
        ),
        v(
            "bool 1",
            ACC,
            "<observed>false</observed>",
            "<observed>1</observed>",
        ),
        v(
            "bool yes",
            ACC,
            "<observed>false</observed>",
            "<observed>yes</observed>",
        ),
        v(
            "bool empty",
            ACC,
            "<observed>false</observed>",
            "<observed/>",
        ),
        // 40.83(e)(1): the day the laboratory initiated action to correct the flaw (optional,
        // after the temperature finding).
        v(
            "correction initiated on",
            ACC,
            "<temperature-recorded>true</temperature-recorded>",
            "<temperature-recorded>true</temperature-recorded>\n  <correction-initiated-on>2024-03-12</correction-initiated-on>",
        ),
        v(
            "correction initiated on not a date",
            ACC,
            "<temperature-recorded>true</temperature-recorded>",
            "<temperature-recorded>true</temperature-recorded>\n  <correction-initiated-on>2024-03-32</correction-initiated-on>",
        ),
        v(
            "correction initiated on out of order",
            ACC,
            "<temperature-recorded>true</temperature-recorded>",
            "<correction-initiated-on>2024-03-12</correction-initiated-on>\n  <temperature-recorded>true</temperature-recorded>",
        ),
        v("flaw form", COR, "collector-certification", "form"),
        v("flaw bad", COR, "collector-certification", "seal"),
        // Dates and date-times.
        v("leap day", ACC, "2024-03-04", "2024-02-29"),
        v("no leap day", ACC, "2024-03-04", "2023-02-29"),
        v("day 31 in April", ACC, "2024-03-04", "2024-04-31"),
        v("year zero", ACC, "2024-03-04", "0000-03-04"),
        v("date with zone", ACC, "2024-03-04", "2024-03-04Z"),
        v(
            "instant no zone",
            COR,
            "2024-03-07T09:30:00Z",
            "2024-03-07T09:30:00",
        ),
        v(
            "instant fraction",
            COR,
            "2024-03-07T09:30:00Z",
            "2024-03-07T09:30:00.123456789+14:00",
        ),
        v(
            "instant 24h",
            COR,
            "2024-03-07T09:30:00Z",
            "2024-03-07T24:00:00Z",
        ),
        v(
            "instant offset 14:01",
            COR,
            "2024-03-07T09:30:00Z",
            "2024-03-07T09:30:00+14:01",
        ),
        // Decimals.
        v("decimal padded", BAT, ">162.5<", "> 0162.50 <"),
        v("decimal +.5", BAT, ">162.5<", ">+.5<"),
        v("decimal -0", BAT, ">162.5<", ">-0.00<"),
        v("decimal negative", BAT, ">162.5<", ">-0.5<"),
        v("decimal exponent", BAT, ">162.5<", ">1e2<"),
        v("decimal 7 fraction digits", BAT, ">162.5<", ">0.1234567<"),
        v("decimal 15 digits", BAT, ">162.5<", ">123456789.123456<"),
        v("decimal 16 digits", BAT, ">162.5<", ">1234567890.123456<"),
        v("decimal empty", BAT, ">162.5<", "><"),
        // Attributes.
        v(
            "unit missing",
            BAT,
            " unit=\"ng/mL\" acceptable=\"true\">162.5",
            " acceptable=\"true\">162.5",
        ),
        v(
            "unit ug",
            BAT,
            "unit=\"ng/mL\" acceptable=\"true\">162.5",
            "unit=\"ug/mL\" acceptable=\"true\">162.5",
        ),
        // The run's QC and each result's acceptability.
        v("batch qc absent", BAT, BATCH_QC, ""),
        v(
            "batch qc unknown element",
            BAT,
            "  <qc>\n",
            "  <qc-removed>\n",
        ),
        v(
            "batch qc role unknown",
            BAT,
            "role=\"calibrator\"",
            "role=\"blank\"",
        ),
        v("batch qc role missing", BAT, " role=\"calibrator\"", ""),
        v(
            "batch qc sample twice",
            BAT,
            "<sample id=\"QC-NEG-C\"",
            "<sample id=\"CAL-CONF\"",
        ),
        v("batch qc empty", BAT, BATCH_QC, "  <qc>\n  </qc>\n"),
        v(
            "batch qc result acceptable",
            BAT,
            "unit=\"ng/mL\">101.2",
            "unit=\"ng/mL\" acceptable=\"true\">101.2",
        ),
        v(
            "batch qc after specimens",
            BAT,
            "  <qc>\n",
            "  <specimen id=\"Z1\"><result analyte=\"thca\" unit=\"ng/mL\">1</result></specimen>\n  <qc>\n",
        ),
        v(
            "acceptable 1",
            BAT,
            "acceptable=\"true\">162.5",
            "acceptable=\"1\">162.5",
        ),
        v(
            "acceptable yes",
            BAT,
            "acceptable=\"true\">162.5",
            "acceptable=\"yes\">162.5",
        ),
        v("bottle C", BAT, "bottle=\"B\"", "bottle=\"C\""),
        v("bottle padded", BAT, "bottle=\"B\"", "bottle=\" B \""),
        v("analyte upper", BAT, "analyte=\"thca\"", "analyte=\"THCA\""),
        v(
            "duplicate analyte",
            BAT,
            "analyte=\"codeine\"",
            "analyte=\"morphine\"",
        ),
        v(
            "duplicate specimen",
            BAT,
            "id=\"0000003\"",
            "id=\"0000002\"",
        ),
        v(
            "unknown attribute",
            BAT,
            "bottle=\"B\"",
            "bottle=\"B\" rack=\"4\"",
        ),
        v(
            "schemaLocation allowed",
            COR,
            "<correction xmlns=\"urn:custodian:lims:1\">",
            "<correction xmlns=\"urn:custodian:lims:1\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xsi:schemaLocation=\"urn:custodian:lims:1 correction.xsd\">",
        ),
        // Structure.
        v(
            "order swapped",
            COR,
            "<flaw>collector-certification</flaw>\n  <document-ref>MEMO-2024-0042</document-ref>",
            "<document-ref>MEMO-2024-0042</document-ref>\n  <flaw>collector-certification</flaw>",
        ),
        v(
            "extra element",
            COR,
            "</recorded-by>",
            "</recorded-by><note>x</note>",
        ),
        v("text in complex", ACC, "<employer>", "<employer>text"),
        v(
            "comment inside value",
            COR,
            "MEMO-2024-0042",
            "MEMO-<!-- c -->2024-0042",
        ),
        v(
            "cdata value",
            COR,
            "MEMO-2024-0042",
            "<![CDATA[MEMO-2024-0042]]>",
        ),
        v(
            "wrong namespace",
            COR,
            "urn:custodian:lims:1",
            "urn:custodian:lims:2",
        ),
        v(
            "prefixed namespace",
            COR,
            "<correction xmlns=\"urn:custodian:lims:1\">",
            "<correction xmlns=\"urn:custodian:lims:1\" xmlns:l=\"urn:custodian:lims:1\">",
        ),
    ]
}

#[test]
fn parser_and_xmllint_agree_around_every_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut disagreements = Vec::new();
    let (mut accepted, mut refused) = (0, 0);
    for (i, var) in variants().into_iter().enumerate() {
        let original = std::fs::read_to_string(data_dir().join(var.example)).unwrap();
        assert!(
            original.contains(var.from),
            "{}: pattern not in {}",
            var.label,
            var.example
        );
        let text = original.replacen(var.from, &var.to, 1);
        let file = dir.path().join(format!("variant-{i}.xml"));
        std::fs::write(&file, &text).unwrap();
        let kind = kind_of(var.example);
        let lint = xmllint_valid(kind, &file);
        let ours = parse_document(text.as_bytes(), DEFAULT_MAX_BYTES);
        if lint {
            accepted += 1;
        } else {
            refused += 1;
        }
        if lint != ours.is_ok() {
            disagreements.push(format!(
                "{}: xmllint {}, parser {:?}",
                var.label,
                if lint { "accepts" } else { "refuses" },
                ours.map(|d| d.kind())
            ));
        }
    }
    assert!(disagreements.is_empty(), "{disagreements:#?}");
    assert!(
        accepted >= 20 && refused >= 30,
        "{accepted} accepted, {refused} refused"
    );
}

/// Where the parser is deliberately stricter than the schemas: xmllint accepts, we refuse.
#[test]
fn documented_stricter_than_xsd() {
    let dir = tempfile::tempdir().unwrap();
    let acc = std::fs::read_to_string(data_dir().join(ACC)).unwrap();
    let cases = [
        (
            "receipt before collection",
            acc.replace("<receipt-date>2024-03-05", "<receipt-date>2024-03-03"),
        ),
        (
            "split bottle present but not collected",
            acc.replace("<split-collected>true", "<split-collected>false"),
        ),
        (
            "correction initiated before receipt",
            acc.replace(
                "<temperature-recorded>true</temperature-recorded>",
                "<temperature-recorded>true</temperature-recorded>\n  <correction-initiated-on>2024-03-04</correction-initiated-on>",
            ),
        ),
        (
            "correction initiated without a correctable flaw",
            acc.replace(
                "<temperature-recorded>true</temperature-recorded>",
                "<temperature-recorded>true</temperature-recorded>\n  <correction-initiated-on>2024-03-05</correction-initiated-on>",
            )
            .replace(
                "<collector-certification-signed>false",
                "<collector-certification-signed>true",
            ),
        ),
        (
            "processing instruction",
            acc.replace("<!-- Fictitious", "<?custodian hint?>\n<!-- Fictitious"),
        ),
        (
            "internal DTD subset",
            acc.replace(
                "<!-- Fictitious",
                "<!DOCTYPE accession [<!ENTITY e \"x\">]>\n<!-- Fictitious",
            ),
        ),
    ];
    for (i, (label, text)) in cases.iter().enumerate() {
        assert_ne!(text, &acc, "{label}: no change");
        let file = dir.path().join(format!("strict-{i}.xml"));
        std::fs::write(&file, text).unwrap();
        assert!(
            xmllint_valid(DocumentKind::Accession, &file),
            "{label}: xmllint refuses it"
        );
        assert!(
            parse_document(text.as_bytes(), DEFAULT_MAX_BYTES).is_err(),
            "{label}: parser accepts it"
        );
    }
}

/// The newcomer's examples in `config/examples/` are valid accession documents for xmllint and
/// the parser alike.
#[test]
fn config_examples_pass_xmllint_and_the_parser() {
    let dir = root().join("config/examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let f = entry.unwrap().path();
        if f.extension().is_none_or(|e| e != "xml") {
            continue;
        }
        seen += 1;
        assert!(
            xmllint_valid(DocumentKind::Accession, &f),
            "{}: xmllint refuses it",
            name(&f)
        );
        let bytes = std::fs::read(&f).unwrap();
        let doc = parse_document(&bytes, DEFAULT_MAX_BYTES)
            .unwrap_or_else(|e| panic!("{}: parser refuses it: {e}", name(&f)));
        assert_eq!(doc.kind(), DocumentKind::Accession, "{}", name(&f));
    }
    assert_eq!(seen, 2, "the clean and the flawed example accession");
}
