//! Schema checking over the element tree: `xs:sequence` order, required and optional elements,
//! element-only versus text-only content, attributes, and typed leaf values.
//!
//! A [`Cursor`] walks the children of one element in order, as an `xs:sequence` does: each call
//! takes the next child if it has the expected name. Errors carry the line of the offending
//! element (or of the parent's end tag for a missing element) and its path.

use super::error::{Rule, XmlError};
use super::tree::Node;
use super::value::{self, Date, DateTime};

/// A simple type given by an enumeration of tokens.
pub(crate) trait Enumerated: Sized + Copy {
    /// The schema's enumeration values, in schema order.
    const VALUES: &'static [&'static str];
    /// The value for one token (already whitespace-collapsed).
    fn from_token(token: &str) -> Option<Self>;
}

pub(crate) fn enumerated<T: Enumerated>(s: &str) -> Result<T, Rule> {
    T::from_token(value::collapse(s)).ok_or(Rule::NotInEnumeration(T::VALUES))
}

/// The children of one element-only element, taken in schema order.
pub(crate) struct Cursor<'a> {
    node: &'a Node,
    path: String,
    next: usize,
    /// The unbounded element taken last, which could still follow.
    repeating: Option<&'static str>,
}

/// A simple-content element with its path, for reading its value or attributes.
pub(crate) struct Leaf<'a> {
    pub node: &'a Node,
    pub path: String,
}

impl<'a> Leaf<'a> {
    fn fail(&self, rule: Rule) -> XmlError {
        XmlError::new(self.node.line, self.path.clone(), rule)
    }

    /// The element's text, after checking it holds no child and only the given attributes.
    pub fn text(&self, attributes: &[&'static str]) -> Result<&'a str, XmlError> {
        if let Some(child) = self.node.children.first() {
            return Err(XmlError::new(
                child.line,
                format!("{}/{}", self.path, child.name),
                Rule::ChildNotAllowed,
            ));
        }
        check_attributes(self.node, &self.path, attributes)?;
        Ok(&self.node.text)
    }

    pub fn value<T>(
        &self,
        attributes: &[&'static str],
        parse: impl FnOnce(&'a str) -> Result<T, Rule>,
    ) -> Result<T, XmlError> {
        let text = self.text(attributes)?;
        parse(text).map_err(|rule| self.fail(rule))
    }

    pub fn required_attribute<T>(
        &self,
        name: &'static str,
        parse: impl FnOnce(&'a str) -> Result<T, Rule>,
    ) -> Result<T, XmlError> {
        required_attribute(self.node, &self.path, name, parse)
    }
}

fn attribute<'a, T>(
    node: &'a Node,
    path: &str,
    name: &'static str,
    parse: impl FnOnce(&'a str) -> Result<T, Rule>,
) -> Result<Option<T>, XmlError> {
    match node.attrs.iter().find(|a| a.name == name) {
        None => Ok(None),
        Some(a) => parse(&a.value)
            .map(Some)
            .map_err(|rule| XmlError::new(node.line, format!("{path}/@{name}"), rule)),
    }
}

fn required_attribute<'a, T>(
    node: &'a Node,
    path: &str,
    name: &'static str,
    parse: impl FnOnce(&'a str) -> Result<T, Rule>,
) -> Result<T, XmlError> {
    attribute(node, path, name, parse)?
        .ok_or_else(|| XmlError::new(node.line, format!("{path}/@{name}"), Rule::MissingAttribute))
}

/// Refuses any attribute not in `allowed`.
pub(crate) fn check_attributes(
    node: &Node,
    path: &str,
    allowed: &[&'static str],
) -> Result<(), XmlError> {
    match node.attrs.iter().find(|a| !allowed.contains(&a.name)) {
        Some(a) => Err(XmlError::new(
            node.line,
            format!("{path}/@{}", a.name),
            Rule::UnknownAttribute,
        )),
        None => Ok(()),
    }
}

/// Reads a text leaf against a pattern.
pub(crate) fn pattern(
    check: fn(&str) -> bool,
    pattern: &'static str,
) -> impl Fn(&str) -> Result<String, Rule> {
    move |s: &str| {
        if check(s) {
            Ok(s.to_string())
        } else {
            Err(Rule::Pattern(pattern))
        }
    }
}

/// Reads a `TextN` leaf.
pub(crate) fn text(max: usize) -> impl Fn(&str) -> Result<String, Rule> {
    move |s: &str| value::check_text(s, max).map(|()| s.to_string())
}

impl<'a> Cursor<'a> {
    /// Opens an element-only element: no text, and only the given attributes.
    pub fn open(
        node: &'a Node,
        path: String,
        attributes: &[&'static str],
    ) -> Result<Cursor<'a>, XmlError> {
        if node.has_text() {
            return Err(XmlError::new(node.line, path, Rule::TextNotAllowed));
        }
        check_attributes(node, &path, attributes)?;
        Ok(Cursor {
            node,
            path,
            next: 0,
            repeating: None,
        })
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn attribute<T>(
        &self,
        name: &'static str,
        parse: impl FnOnce(&'a str) -> Result<T, Rule>,
    ) -> Result<Option<T>, XmlError> {
        attribute(self.node, &self.path, name, parse)
    }

    pub fn required_attribute<T>(
        &self,
        name: &'static str,
        parse: impl FnOnce(&'a str) -> Result<T, Rule>,
    ) -> Result<T, XmlError> {
        required_attribute(self.node, &self.path, name, parse)
    }

    fn peek(&self) -> Option<&'a Node> {
        self.node.children.get(self.next)
    }

    /// The next child if it is named `name`.
    fn take(&mut self, name: &'static str) -> Option<&'a Node> {
        let n = self.peek().filter(|n| n.name == name)?;
        self.next += 1;
        self.repeating = None;
        Some(n)
    }

    fn missing(&self, name: &'static str) -> XmlError {
        match self.peek() {
            Some(other) => XmlError::new(
                other.line,
                format!("{}/{}", self.path, other.name),
                Rule::UnexpectedElement {
                    expected: Some(name),
                },
            ),
            None => XmlError::new(
                self.node.end_line,
                format!("{}/{name}", self.path),
                Rule::MissingElement,
            ),
        }
    }

    /// The next child, which must be `name`.
    pub fn leaf(&mut self, name: &'static str) -> Result<Leaf<'a>, XmlError> {
        let node = self.take(name).ok_or_else(|| self.missing(name))?;
        Ok(Leaf {
            node,
            path: format!("{}/{name}", self.path),
        })
    }

    /// The next child if it is `name` (`minOccurs="0"`).
    pub fn opt_leaf(&mut self, name: &'static str) -> Option<Leaf<'a>> {
        let node = self.take(name)?;
        Some(Leaf {
            node,
            path: format!("{}/{name}", self.path),
        })
    }

    /// An optional `CcfImage` element: `media-type` attribute, base64 content.
    pub fn opt_image(
        &mut self,
        name: &'static str,
    ) -> Result<Option<super::value::Image>, XmlError> {
        let Some(leaf) = self.opt_leaf(name) else {
            return Ok(None);
        };
        let media_type = leaf.required_attribute("media-type", |s| {
            crate::domain::copy1::MediaType::from_key(s)
                .ok_or(Rule::NotInEnumeration(super::value::MEDIA_TYPES))
        })?;
        let data = leaf.value(&["media-type"], super::value::base64_binary)?;
        crate::domain::copy1::check_image(media_type, &data)
            .map_err(|e| XmlError::new(leaf.node.line, leaf.path.clone(), Rule::BadImage(e)))?;
        Ok(Some(super::value::Image { media_type, data }))
    }

    /// A required leaf's value.
    pub fn value<T>(
        &mut self,
        name: &'static str,
        parse: impl FnOnce(&'a str) -> Result<T, Rule>,
    ) -> Result<T, XmlError> {
        self.leaf(name)?.value(&[], parse)
    }

    /// An optional leaf's value.
    pub fn opt_value<T>(
        &mut self,
        name: &'static str,
        parse: impl FnOnce(&'a str) -> Result<T, Rule>,
    ) -> Result<Option<T>, XmlError> {
        self.opt_leaf(name).map(|l| l.value(&[], parse)).transpose()
    }

    pub fn flag(&mut self, name: &'static str) -> Result<bool, XmlError> {
        self.value(name, value::parse_bool)
    }

    pub fn date(&mut self, name: &'static str) -> Result<(Date, u32), XmlError> {
        let leaf = self.leaf(name)?;
        let d = leaf.value(&[], Date::parse)?;
        Ok((d, leaf.node.line))
    }

    pub fn date_time(&mut self, name: &'static str) -> Result<DateTime, XmlError> {
        self.value(name, DateTime::parse)
    }

    pub fn token<T: Enumerated>(&mut self, name: &'static str) -> Result<T, XmlError> {
        self.value(name, enumerated::<T>)
    }

    pub fn opt_token<T: Enumerated>(&mut self, name: &'static str) -> Result<Option<T>, XmlError> {
        self.opt_value(name, enumerated::<T>)
    }

    /// The next child, which must be the element-only `name`.
    pub fn element(
        &mut self,
        name: &'static str,
        attributes: &[&'static str],
    ) -> Result<Cursor<'a>, XmlError> {
        let node = self.take(name).ok_or_else(|| self.missing(name))?;
        Cursor::open(node, format!("{}/{name}", self.path), attributes)
    }

    /// The next child if it is the element-only `name` (`minOccurs="0"`).
    pub fn opt_element(
        &mut self,
        name: &'static str,
        attributes: &[&'static str],
    ) -> Result<Option<Cursor<'a>>, XmlError> {
        match self.take(name) {
            Some(node) => Cursor::open(node, format!("{}/{name}", self.path), attributes).map(Some),
            None => Ok(None),
        }
    }

    /// All following children named `name`, at least one (`maxOccurs="unbounded"`), with
    /// 1-based indexed paths.
    pub fn repeated(&mut self, name: &'static str) -> Result<Vec<Leaf<'a>>, XmlError> {
        let mut out = Vec::new();
        while let Some(node) = self.take(name) {
            out.push(Leaf {
                node,
                path: format!("{}/{name}[{}]", self.path, out.len() + 1),
            });
        }
        if out.is_empty() {
            return Err(self.missing(name));
        }
        self.repeating = Some(name);
        Ok(out)
    }

    /// The next child, which must be one of `names` (`xs:choice`); `expected` lists them for
    /// the error.
    pub fn choice(
        &mut self,
        names: &'static [&'static str],
        expected: &'static str,
    ) -> Result<Leaf<'a>, XmlError> {
        match self.peek() {
            Some(n) if names.contains(&n.name) => {
                self.next += 1;
                self.repeating = None;
                Ok(Leaf {
                    node: n,
                    path: format!("{}/{}", self.path, n.name),
                })
            }
            Some(other) => Err(XmlError::new(
                other.line,
                format!("{}/{}", self.path, other.name),
                Rule::UnexpectedElement {
                    expected: Some(expected),
                },
            )),
            None => Err(XmlError::new(
                self.node.end_line,
                format!("{}/{}", self.path, names.join("|")),
                Rule::MissingElement,
            )),
        }
    }

    /// No children may follow.
    pub fn finish(self) -> Result<(), XmlError> {
        match self.peek() {
            Some(other) => Err(XmlError::new(
                other.line,
                format!("{}/{}", self.path, other.name),
                Rule::UnexpectedElement {
                    expected: self.repeating,
                },
            )),
            None => Ok(()),
        }
    }
}
