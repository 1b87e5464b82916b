//! The guarded XML reader: bytes in, a small element tree out.
//!
//! This is the only module that talks to quick-xml. Before and while reading it enforces:
//! - the caller's size limit, before anything is decoded;
//! - UTF-8 only: a UTF-16/32 byte-order mark, an `encoding` declaration other than UTF-8, or
//!   bytes that are not UTF-8 are refused (a UTF-8 byte-order mark is allowed);
//! - XML 1.0 only, and only the characters XML 1.0 allows (also through `&#…;` references);
//! - no DOCTYPE (so no DTD, no entity declarations, no external entities), no entity reference
//!   other than the five predefined ones, no processing instruction other than the declaration;
//! - exactly one root element, no text outside it, nesting no deeper than [`MAX_DEPTH`];
//! - every element in the namespace [`NAMESPACE`]; attributes unqualified, except namespace
//!   declarations and `xsi:schemaLocation` / `xsi:noNamespaceSchemaLocation`, which are ignored.
//!
//! Line ends are normalised (`\r\n` and a lone `\r` become `\n`) before parsing, as XML 1.0
//! section 2.11 requires; attribute values are normalised as section 3.3.3 requires.
//!
//! Names in the tree are `&'static str` from [`VOCABULARY`]; a name the schemas do not declare
//! becomes `*`, so no error path can carry a string taken from the document.

use super::error::{Rule, XmlError};
use quick_xml::XmlVersion;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;
use std::borrow::Cow;

/// The namespace of every LIMS document element.
pub const NAMESPACE: &str = "urn:custodian:lims:1";
const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// Deepest nesting accepted. The schemas need 4 (`confirmation-batch/qc/sample/result`).
pub const MAX_DEPTH: usize = 8;

/// Every element and attribute name the three schemas declare.
pub(crate) const VOCABULARY: &[&str] = &[
    // accession
    "accession",
    "specimen-id",
    "employer",
    "name",
    "id",
    "mro",
    "address",
    "directory-id",
    "donor",
    "ssn",
    "employee-id",
    "reason",
    "dot-agency",
    "collector",
    "phone",
    "collection-date",
    "receipt-date",
    "tests-requested",
    "panel",
    "specimen-type",
    "profile",
    "split-collected",
    "observed",
    "bottle-a",
    "bottle-b",
    "seal",
    "volume-sufficient",
    "leaked",
    "freezer-location",
    "bottle-id-matches-ccf",
    "labels-swapped",
    "split-opened-instead",
    "collector-name-and-signature",
    "collector-certification-signed",
    "form",
    "temperature-recorded",
    "correction-initiated-on",
    "remarks",
    "ccf-image",
    // certified-copy
    "certified-copy",
    "certifying-scientist",
    "media-type",
    // confirmation-batch
    "confirmation-batch",
    "batch-id",
    "instrument",
    "run-at",
    "specimen",
    "result",
    "bottle",
    "analyte",
    "unit",
    "qc",
    "sample",
    "role",
    "acceptable",
    // correction
    "correction",
    "flaw",
    "document-ref",
    "received-at",
    "recorded-by",
    // request
    "request",
    "retention-extension",
    "requester",
    "subject",
    "until",
    "until-released",
    "retention-release",
    "request-ref",
    "quantitation",
    "split-test",
    "second-laboratory",
    "adulterant-retest",
    "cite",
    "remark",
    "substance",
];

/// A name from [`VOCABULARY`], or `*` for one the schemas do not know.
pub(crate) fn known_name(name: &str) -> &'static str {
    VOCABULARY
        .iter()
        .copied()
        .find(|v| *v == name)
        .unwrap_or("*")
}

/// An element of the namespace, with its unqualified attributes and character data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    pub name: &'static str,
    /// Line of the start tag.
    pub line: u32,
    /// Line of the end tag (the start tag's line for `<empty/>`).
    pub end_line: u32,
    pub attrs: Vec<Attr>,
    pub children: Vec<Node>,
    /// Character data (text, CDATA, resolved references) in document order; comments dropped.
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Attr {
    pub name: &'static str,
    pub value: String,
}

impl Node {
    /// True if the element holds character data other than XML whitespace.
    pub fn has_text(&self) -> bool {
        self.text.chars().any(|c| !is_xml_space(c))
    }
}

/// XML's whitespace (`S`): space, tab, line feed, carriage return.
pub(crate) fn is_xml_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// XML 1.0 `Char`. Surrogates cannot occur in a Rust `char`.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Byte offsets → 1-based line numbers.
struct Lines {
    newlines: Vec<usize>,
}

impl Lines {
    fn new(text: &str) -> Lines {
        Lines {
            newlines: text
                .bytes()
                .enumerate()
                .filter(|(_, b)| *b == b'\n')
                .map(|(i, _)| i)
                .collect(),
        }
    }
    fn at(&self, offset: u64) -> u32 {
        let offset = usize::try_from(offset).unwrap_or(usize::MAX);
        let line = self.newlines.partition_point(|nl| *nl < offset) + 1;
        u32::try_from(line).unwrap_or(u32::MAX)
    }
}

/// The line of a byte offset in undecoded input, counting `\n`, `\r\n` and a lone `\r` as
/// one line end each (as after normalisation).
fn line_of_byte(bytes: &[u8], offset: usize) -> u32 {
    let head = &bytes[..offset.min(bytes.len())];
    let n = head
        .iter()
        .enumerate()
        .filter(|(i, b)| **b == b'\n' || (**b == b'\r' && head.get(i + 1) != Some(&b'\n')))
        .count();
    u32::try_from(n + 1).unwrap_or(u32::MAX)
}

fn doc_error(rule: Rule) -> XmlError {
    XmlError::new(1, "/", rule)
}

/// Checks size and encoding, and returns the text with line ends normalised.
fn decode(bytes: &[u8], max_bytes: usize) -> Result<String, XmlError> {
    if bytes.len() > max_bytes {
        return Err(doc_error(Rule::TooLarge { limit: max_bytes }));
    }
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    // UTF-16 and UTF-32 byte-order marks, and UTF-16 text without one ('<' then NUL or NUL '<').
    if bytes.starts_with(b"\xFE\xFF")
        || bytes.starts_with(b"\xFF\xFE")
        || bytes.starts_with(b"\x00\x00\xFE\xFF")
        || bytes.starts_with(b"\x00<")
        || bytes.starts_with(b"<\x00")
    {
        return Err(doc_error(Rule::UnsupportedEncoding));
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            return Err(XmlError::new(
                line_of_byte(bytes, e.valid_up_to()),
                "/",
                Rule::NotUtf8,
            ));
        }
    };
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\r' {
            if chars.peek() == Some(&'\n') {
                chars.next();
            }
            out.push('\n');
        } else {
            out.push(c);
        }
    }
    if let Some(pos) = out.find(|c| !is_xml_char(c)) {
        let line = Lines::new(&out).at(pos as u64);
        return Err(XmlError::new(line, "/", Rule::ForbiddenCharacter));
    }
    Ok(out)
}

fn path_of(stack: &[Node]) -> String {
    if stack.is_empty() {
        return "/".to_string();
    }
    let mut p = String::new();
    for n in stack {
        p.push('/');
        p.push_str(n.name);
    }
    p
}

fn malformed(e: &quick_xml::Error) -> Rule {
    use quick_xml::errors::{IllFormedError, SyntaxError};
    use quick_xml::events::attributes::AttrError;
    match e {
        quick_xml::Error::Syntax(s) => Rule::Malformed(match s {
            SyntaxError::InvalidBangMarkup => "unknown markup after `<!`",
            SyntaxError::UnclosedPI => "processing instruction not closed",
            SyntaxError::UnclosedXmlDecl => "XML declaration not closed",
            SyntaxError::UnclosedComment => "comment not closed",
            SyntaxError::UnclosedDoctype => "DOCTYPE not closed",
            SyntaxError::UnclosedCData => "CDATA section not closed",
            SyntaxError::UnclosedTag => "tag not closed",
            SyntaxError::UnclosedSingleQuotedAttributeValue
            | SyntaxError::UnclosedDoubleQuotedAttributeValue => "attribute value not closed",
        }),
        quick_xml::Error::IllFormed(i) => match i {
            IllFormedError::MissingDeclVersion(_) | IllFormedError::UnknownVersion => {
                Rule::UnsupportedXmlVersion
            }
            IllFormedError::MissingDoctypeName => Rule::DoctypeRefused,
            IllFormedError::MissingEndTag(_) => Rule::Malformed("element not closed"),
            IllFormedError::UnmatchedEndTag(_) => Rule::Malformed("end tag without a start tag"),
            IllFormedError::MismatchedEndTag { .. } => {
                Rule::Malformed("end tag does not match the start tag")
            }
            IllFormedError::DoubleHyphenInComment => Rule::Malformed("`--` inside a comment"),
            IllFormedError::UnclosedReference => Rule::Malformed("`&` not part of a reference"),
        },
        quick_xml::Error::InvalidAttr(AttrError::Duplicated(_, _)) => Rule::DuplicateAttribute,
        quick_xml::Error::InvalidAttr(_) => Rule::Malformed("attribute syntax"),
        quick_xml::Error::Encoding(_) => Rule::NotUtf8,
        quick_xml::Error::Escape(_) => Rule::EntityRefused,
        quick_xml::Error::Namespace(_) => Rule::Malformed("namespace declaration"),
        quick_xml::Error::Io(_) => Rule::Malformed("read error"),
    }
}

/// Resolves one reference body (`amp`, `#x41`, `#65`) to its text.
fn resolve_reference(body: &str) -> Result<char, Rule> {
    if let Some(num) = body.strip_prefix('#') {
        let code = if let Some(hex) = num.strip_prefix('x') {
            if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Rule::Malformed("character reference"));
            }
            u32::from_str_radix(hex, 16).ok()
        } else {
            if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Rule::Malformed("character reference"));
            }
            num.parse::<u32>().ok()
        };
        return match code.and_then(char::from_u32) {
            Some(c) if is_xml_char(c) => Ok(c),
            _ => Err(Rule::ForbiddenCharacter),
        };
    }
    match body {
        "lt" => Ok('<'),
        "gt" => Ok('>'),
        "amp" => Ok('&'),
        "apos" => Ok('\''),
        "quot" => Ok('"'),
        _ => Err(Rule::EntityRefused),
    }
}

/// Attribute-value normalisation (XML 1.0 §3.3.3) with references resolved by
/// [`resolve_reference`]; `<` is not allowed in a value.
fn attribute_value(raw: &str) -> Result<String, Rule> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find(['&', '<', '\t', '\n', '\r']) {
        out.push_str(&rest[..i]);
        let c = rest[i..].chars().next().unwrap_or(' ');
        match c {
            '<' => return Err(Rule::Malformed("`<` in an attribute value")),
            '&' => {
                let body_end = rest[i..]
                    .find(';')
                    .ok_or(Rule::Malformed("`&` not part of a reference"))?;
                out.push(resolve_reference(&rest[i + 1..i + body_end])?);
                rest = &rest[i + body_end + 1..];
                continue;
            }
            _ => out.push(' '),
        }
        rest = &rest[i + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn start_node(
    reader: &NsReader<&[u8]>,
    e: &BytesStart<'_>,
    line: u32,
    stack: &[Node],
) -> Result<Node, XmlError> {
    let (ns, local) = reader.resolver().resolve_element(e.name());
    let name = known_name(local.as_ref());
    let here = || {
        let mut p = path_of(stack);
        if !stack.is_empty() {
            p.push('/');
        }
        p.push_str(name);
        p
    };
    match ns {
        ResolveResult::Bound(n) if n.as_ref() == NAMESPACE => {}
        ResolveResult::Unknown(_) => {
            return Err(XmlError::new(
                line,
                here(),
                Rule::Malformed("undeclared namespace prefix"),
            ));
        }
        _ => return Err(XmlError::new(line, here(), Rule::WrongNamespace)),
    }
    let mut node = Node {
        name,
        line,
        end_line: line,
        attrs: Vec::new(),
        children: Vec::new(),
        text: String::new(),
    };
    for a in e.attributes() {
        let a = a.map_err(|err| XmlError::new(line, here(), malformed(&err.into())))?;
        if a.key.as_namespace_binding().is_some() {
            continue;
        }
        let (ans, alocal) = reader.resolver().resolve_attribute(a.key);
        let attr_name = match ans {
            ResolveResult::Unbound => known_name(alocal.as_ref()),
            ResolveResult::Bound(n)
                if n.as_ref() == XSI
                    && matches!(
                        alocal.as_ref(),
                        "schemaLocation" | "noNamespaceSchemaLocation"
                    ) =>
            {
                continue;
            }
            ResolveResult::Unknown(_) => {
                return Err(XmlError::new(
                    line,
                    format!("{}/@*", here()),
                    Rule::Malformed("undeclared namespace prefix"),
                ));
            }
            ResolveResult::Bound(_) => "*",
        };
        let value = attribute_value(&a.value)
            .map_err(|rule| XmlError::new(line, format!("{}/@{attr_name}", here()), rule))?;
        node.attrs.push(Attr {
            name: attr_name,
            value,
        });
    }
    Ok(node)
}

/// Parses the bytes into the root element, enforcing everything in the module comment.
pub(crate) fn parse_tree(bytes: &[u8], max_bytes: usize) -> Result<Node, XmlError> {
    let text = decode(bytes, max_bytes)?;
    let lines = Lines::new(&text);
    let mut reader = NsReader::from_str(&text);
    {
        let config = reader.config_mut();
        config.check_end_names = true;
        config.check_comments = true;
        config.expand_empty_elements = false;
        config.trim_text(false);
        config.allow_dangling_amp = false;
        config.allow_unmatched_ends = false;
    }
    let mut stack: Vec<Node> = Vec::new();
    let mut root: Option<Node> = None;
    let mut first = true;
    loop {
        let start = reader.buffer_position();
        let event = match reader.read_event() {
            Ok(ev) => ev,
            Err(e) => {
                let line = lines.at(reader.error_position());
                return Err(XmlError::new(line, path_of(&stack), malformed(&e)));
            }
        };
        let line = lines.at(start);
        let is_first = first;
        first = false;
        let err = |rule: Rule, stack: &[Node]| Err(XmlError::new(line, path_of(stack), rule));
        match event {
            Event::Decl(d) => {
                if !is_first {
                    return err(Rule::Malformed("XML declaration not at the start"), &stack);
                }
                match d.version() {
                    Ok(v) if v.as_ref() == "1.0" => {}
                    _ => return err(Rule::UnsupportedXmlVersion, &stack),
                }
                if let Some(enc) = d.encoding() {
                    match enc {
                        Ok(v) if v.eq_ignore_ascii_case("UTF-8") => {}
                        _ => return err(Rule::UnsupportedEncoding, &stack),
                    }
                }
            }
            Event::DocType(_) => return err(Rule::DoctypeRefused, &stack),
            Event::PI(_) => return err(Rule::ProcessingInstructionRefused, &stack),
            Event::Comment(_) => {}
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(event, Event::Empty(_));
                if root.is_some() {
                    return err(Rule::Malformed("more than one root element"), &stack);
                }
                if stack.len() >= MAX_DEPTH {
                    return err(Rule::TooDeep { max: MAX_DEPTH }, &stack);
                }
                let node = start_node(&reader, e, line, &stack)?;
                if empty {
                    finish(node, &mut stack, &mut root);
                } else {
                    stack.push(node);
                }
            }
            Event::End(_) => match stack.pop() {
                Some(mut node) => {
                    node.end_line = line;
                    finish(node, &mut stack, &mut root);
                }
                None => return err(Rule::Malformed("end tag without a start tag"), &stack),
            },
            Event::Text(t) => {
                let content: Cow<'_, str> = t.xml_content(XmlVersion::Implicit1_0);
                match stack.last_mut() {
                    Some(node) => {
                        if content.contains("]]>") {
                            return err(Rule::Malformed("`]]>` in text"), &stack);
                        }
                        node.text.push_str(&content);
                    }
                    None if content.chars().all(is_xml_space) => {}
                    None => return err(Rule::Malformed("text outside the root element"), &stack),
                }
            }
            Event::CData(c) => match stack.last_mut() {
                Some(node) => node.text.push_str(&c.xml_content(XmlVersion::Implicit1_0)),
                None => return err(Rule::Malformed("CDATA outside the root element"), &stack),
            },
            Event::GeneralRef(r) => {
                let c = match resolve_reference(&r) {
                    Ok(c) => c,
                    Err(rule) => return err(rule, &stack),
                };
                match stack.last_mut() {
                    Some(node) => node.text.push(c),
                    None => {
                        return err(
                            Rule::Malformed("reference outside the root element"),
                            &stack,
                        );
                    }
                }
            }
            Event::Eof => {
                if !stack.is_empty() {
                    return err(Rule::Malformed("element not closed"), &stack);
                }
                return root.ok_or_else(|| XmlError::new(line, "/", Rule::NoRoot));
            }
        }
    }
}

fn finish(node: Node, stack: &mut [Node], root: &mut Option<Node>) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(node),
        None => *root = Some(node),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 1 << 16;

    fn tree(s: &str) -> Result<Node, XmlError> {
        parse_tree(s.as_bytes(), LIMIT)
    }

    fn rule(s: &str) -> Rule {
        tree(s).expect_err("should be refused").rule
    }

    #[test]
    fn builds_tree_with_lines_text_and_attributes() {
        let n = tree(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<specimen xmlns=\"urn:custodian:lims:1\" id=\"a&amp;b\">\n  <result>1&lt;2<![CDATA[<x>]]><!-- c -->&#x41;</result>\n  <unit/>\n</specimen>\n",
        )
        .unwrap();
        assert_eq!(n.name, "specimen");
        assert_eq!((n.line, n.end_line), (2, 5));
        assert_eq!(
            n.attrs,
            vec![Attr {
                name: "id",
                value: "a&b".into()
            }]
        );
        assert_eq!(n.children.len(), 2);
        assert_eq!(n.children[0].text, "1<2<x>A");
        assert_eq!(n.children[0].line, 3);
        assert_eq!((n.children[1].line, n.children[1].end_line), (4, 4));
        assert!(!n.has_text());
    }

    #[test]
    fn prefixed_namespace_and_xsi_location_accepted() {
        let n = tree("<l:correction xmlns:l=\"urn:custodian:lims:1\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xsi:schemaLocation=\"urn:custodian:lims:1 correction.xsd\"/>").unwrap();
        assert_eq!(n.name, "correction");
        assert!(n.attrs.is_empty());
    }

    #[test]
    fn line_ends_normalised() {
        let n = tree(
            "<correction xmlns=\"urn:custodian:lims:1\">\r\n<flaw>a\rb\r\nc</flaw>\r</correction>",
        )
        .unwrap();
        assert_eq!(n.children[0].text, "a\nb\nc");
        assert_eq!(n.children[0].line, 2);
        assert_eq!(n.end_line, 5);
        let n = tree("<correction xmlns=\"urn:custodian:lims:1\" id=\"a&#13;\tb\nc\"/>").unwrap();
        assert_eq!(n.attrs[0].value, "a\r b c");
    }

    #[test]
    fn doctype_and_entities_refused() {
        let xxe = "<?xml version=\"1.0\"?>\n<!DOCTYPE correction [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>\n<correction xmlns=\"urn:custodian:lims:1\">&x;</correction>";
        let e = tree(xxe).unwrap_err();
        assert_eq!((e.line, e.rule), (2, Rule::DoctypeRefused));
        assert_eq!(
            rule("<!DOCTYPE correction><correction xmlns=\"urn:custodian:lims:1\"/>"),
            Rule::DoctypeRefused
        );
        let e = tree("<correction xmlns=\"urn:custodian:lims:1\">\n<flaw>&x;</flaw></correction>")
            .unwrap_err();
        assert_eq!(
            (e.line, e.path.as_str(), e.rule),
            (2, "/correction/flaw", Rule::EntityRefused)
        );
        assert_eq!(
            rule("<correction xmlns=\"urn:custodian:lims:1\" id=\"&x;\"/>"),
            Rule::EntityRefused
        );
        assert_eq!(
            rule("<correction xmlns=\"urn:custodian:lims:1\">&#1;</correction>"),
            Rule::ForbiddenCharacter
        );
        assert_eq!(
            rule("<correction xmlns=\"urn:custodian:lims:1\">&#xFFFE;</correction>"),
            Rule::ForbiddenCharacter
        );
        assert_eq!(
            rule("<correction xmlns=\"urn:custodian:lims:1\">a & b</correction>"),
            Rule::Malformed("`&` not part of a reference")
        );
    }

    #[test]
    fn processing_instructions_refused() {
        assert_eq!(
            rule("<?xml-stylesheet href=\"x\"?><correction xmlns=\"urn:custodian:lims:1\"/>"),
            Rule::ProcessingInstructionRefused
        );
        assert_eq!(
            rule("<correction xmlns=\"urn:custodian:lims:1\"/><?xml version=\"1.0\"?>"),
            Rule::Malformed("XML declaration not at the start")
        );
    }

    #[test]
    fn encoding_rules() {
        let e = parse_tree(
            b"<correction xmlns=\"urn:custodian:lims:1\">\n\xE9</correction>",
            LIMIT,
        )
        .unwrap_err();
        assert_eq!((e.line, e.rule), (2, Rule::NotUtf8));
        let e = parse_tree(
            b"<correction xmlns=\"urn:custodian:lims:1\">\r\n\r<a/>\r\n\xFF</correction>",
            LIMIT,
        )
        .unwrap_err();
        assert_eq!((e.line, e.rule), (4, Rule::NotUtf8));
        assert_eq!(
            rule(
                "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><correction xmlns=\"urn:custodian:lims:1\"/>"
            ),
            Rule::UnsupportedEncoding
        );
        assert_eq!(
            parse_tree(b"\xFF\xFE<\x00c\x00/\x00>\x00", LIMIT)
                .unwrap_err()
                .rule,
            Rule::UnsupportedEncoding
        );
        assert_eq!(
            parse_tree(b"<\x00c\x00/\x00>\x00", LIMIT).unwrap_err().rule,
            Rule::UnsupportedEncoding
        );
        let bom = b"\xEF\xBB\xBF<correction xmlns=\"urn:custodian:lims:1\"/>";
        assert_eq!(parse_tree(bom, LIMIT).unwrap().name, "correction");
        assert_eq!(
            rule("<?xml version=\"1.1\"?><correction xmlns=\"urn:custodian:lims:1\"/>"),
            Rule::UnsupportedXmlVersion
        );
        assert_eq!(
            rule("<correction xmlns=\"urn:custodian:lims:1\">\u{1}</correction>"),
            Rule::ForbiddenCharacter
        );
    }

    #[test]
    fn size_limit_at_the_boundary() {
        let doc = "<correction xmlns=\"urn:custodian:lims:1\"/>";
        assert!(parse_tree(doc.as_bytes(), doc.len()).is_ok());
        let e = parse_tree(doc.as_bytes(), doc.len() - 1).unwrap_err();
        assert_eq!(
            (e.line, e.path.as_str(), e.rule),
            (
                1,
                "/",
                Rule::TooLarge {
                    limit: doc.len() - 1
                }
            )
        );
    }

    #[test]
    fn structure_rules() {
        assert_eq!(rule(""), Rule::NoRoot);
        assert_eq!(rule("<!-- only -->"), Rule::NoRoot);
        assert_eq!(
            rule(
                "<correction xmlns=\"urn:custodian:lims:1\"/><correction xmlns=\"urn:custodian:lims:1\"/>"
            ),
            Rule::Malformed("more than one root element")
        );
        assert_eq!(
            rule("x<correction xmlns=\"urn:custodian:lims:1\"/>"),
            Rule::Malformed("text outside the root element")
        );
        assert_eq!(
            rule("<correction xmlns=\"urn:custodian:lims:1\"><flaw></correction>"),
            Rule::Malformed("end tag does not match the start tag")
        );
        assert_eq!(
            rule("<correction xmlns=\"urn:custodian:lims:1\"><flaw>"),
            Rule::Malformed("element not closed")
        );
        assert_eq!(
            rule("<correction xmlns=\"urn:custodian:lims:1\" id=\"1\" id=\"2\"/>"),
            Rule::DuplicateAttribute
        );
        assert_eq!(
            rule("<correction xmlns=\"urn:custodian:lims:1\"><!-- a -- b --></correction>"),
            Rule::Malformed("`--` inside a comment")
        );
    }

    #[test]
    fn depth_limit() {
        let ok = format!(
            "<a xmlns=\"urn:custodian:lims:1\">{}{}</a>",
            "<b>".repeat(MAX_DEPTH - 1),
            "</b>".repeat(MAX_DEPTH - 1)
        );
        assert!(tree(&ok).is_ok());
        let deep = format!(
            "<a xmlns=\"urn:custodian:lims:1\">{}{}</a>",
            "<b>".repeat(MAX_DEPTH),
            "</b>".repeat(MAX_DEPTH)
        );
        assert_eq!(rule(&deep), Rule::TooDeep { max: MAX_DEPTH });
    }

    #[test]
    fn namespace_rules() {
        let e = tree("<correction/>").unwrap_err();
        assert_eq!(
            (e.path.as_str(), e.rule),
            ("/correction", Rule::WrongNamespace)
        );
        let e = tree("<correction xmlns=\"urn:custodian:lims:2\"/>").unwrap_err();
        assert_eq!(e.rule, Rule::WrongNamespace);
        let e = tree("<correction xmlns=\"urn:custodian:lims:1\"><flaw xmlns=\"\"/></correction>")
            .unwrap_err();
        assert_eq!(
            (e.path.as_str(), e.rule),
            ("/correction/flaw", Rule::WrongNamespace)
        );
        let e = tree("<x:correction xmlns=\"urn:custodian:lims:1\"/>").unwrap_err();
        assert_eq!(e.rule, Rule::Malformed("undeclared namespace prefix"));
        let n =
            tree("<correction xmlns=\"urn:custodian:lims:1\" xmlns:o=\"urn:other\" o:id=\"1\"/>")
                .unwrap();
        assert_eq!(n.attrs[0].name, "*");
    }

    #[test]
    fn unknown_names_never_echoed() {
        let e = tree("<c123-45-6789 xmlns=\"urn:custodian:lims:1\"><x/>").unwrap_err();
        assert!(!e.to_string().contains("6789"), "{e}");
        assert_eq!(e.path, "/*");
    }
}
