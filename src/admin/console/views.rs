//! The console's pages: askama templates (checked when the crate compiles, under
//! `src/admin/console/templates/`) and the values they show. Every value is HTML-escaped by the
//! template engine; nothing here builds HTML by hand.

use askama::Template;

/// The header of a signed-in page: who, and the sign-out form's CSRF token.
pub struct Nav {
    pub user: String,
    pub role: &'static str,
    pub csrf: String,
}

#[derive(Template)]
#[template(path = "sign_in.html", config = "src/admin/console/askama.toml")]
pub struct SignIn {
    pub title: &'static str,
    pub nav: Option<Nav>,
    pub csrf: String,
    pub user: String,
    pub error: Option<String>,
    pub notice: Option<String>,
}

/// A button that POSTs (with the page's CSRF token) to `action`.
pub struct PostAction {
    pub action: String,
    pub label: String,
}

/// A table cell: text, optionally a link, optionally a button.
#[derive(Default)]
pub struct Cell {
    pub text: String,
    pub href: Option<String>,
    pub post: Option<PostAction>,
    pub mono: bool,
}

impl Cell {
    pub fn text(t: impl Into<String>) -> Cell {
        Cell {
            text: t.into(),
            ..Cell::default()
        }
    }
    pub fn link(t: impl Into<String>, href: impl Into<String>) -> Cell {
        Cell {
            text: t.into(),
            href: Some(href.into()),
            ..Cell::default()
        }
    }
    pub fn mono(t: impl Into<String>) -> Cell {
        Cell {
            text: t.into(),
            mono: true,
            ..Cell::default()
        }
    }
    pub fn button(label: impl Into<String>, action: impl Into<String>) -> Cell {
        Cell {
            post: Some(PostAction {
                action: action.into(),
                label: label.into(),
            }),
            ..Cell::default()
        }
    }
}

pub struct Table {
    pub caption: String,
    pub headers: Vec<&'static str>,
    pub rows: Vec<Vec<Cell>>,
    /// Shown instead of an empty table.
    pub empty: String,
}

pub struct Field {
    pub label: String,
    pub name: String,
    /// `hidden`, `text`, `password` or `checkbox`.
    pub kind: &'static str,
    pub value: String,
    pub required: bool,
    pub autocomplete: &'static str,
}

impl Field {
    pub fn hidden(name: &str, value: impl Into<String>) -> Field {
        Field {
            label: String::new(),
            name: name.into(),
            kind: "hidden",
            value: value.into(),
            required: false,
            autocomplete: "off",
        }
    }
    pub fn password() -> Field {
        Field {
            label: "Password".into(),
            name: "password".into(),
            kind: "password",
            value: String::new(),
            required: true,
            autocomplete: "current-password",
        }
    }
    pub fn checkbox(label: impl Into<String>, name: &str, value: &str) -> Field {
        Field {
            label: label.into(),
            name: name.into(),
            kind: "checkbox",
            value: value.into(),
            required: true,
            autocomplete: "off",
        }
    }
}

pub struct FormView {
    pub method: &'static str,
    pub action: String,
    pub fields: Vec<Field>,
    pub button: String,
}

pub struct Link {
    pub href: String,
    pub text: String,
}

/// A page of paragraphs, tables, at most one form and links.
#[derive(Template)]
#[template(path = "page.html", config = "src/admin/console/askama.toml")]
pub struct Page {
    pub title: String,
    pub nav: Option<Nav>,
    pub csrf: String,
    pub error: Option<String>,
    pub paragraphs: Vec<String>,
    pub tables: Vec<Table>,
    pub form: Option<FormView>,
    /// Preformatted text (e.g. raw bytes as received).
    pub pre: Option<String>,
    pub links: Vec<Link>,
}

impl Page {
    pub fn new(title: impl Into<String>, nav: Option<Nav>) -> Page {
        let csrf = nav.as_ref().map(|n| n.csrf.clone()).unwrap_or_default();
        Page {
            title: title.into(),
            nav,
            csrf,
            error: None,
            paragraphs: Vec::new(),
            tables: Vec::new(),
            form: None,
            pre: None,
            links: Vec::new(),
        }
    }
    pub fn para(mut self, p: impl Into<String>) -> Page {
        self.paragraphs.push(p.into());
        self
    }
    pub fn link(mut self, href: impl Into<String>, text: impl Into<String>) -> Page {
        self.links.push(Link {
            href: href.into(),
            text: text.into(),
        });
        self
    }
}

pub struct QueueRow {
    pub id: String,
    pub age: String,
    pub state: String,
    pub result: String,
    pub flags: Vec<&'static str>,
    pub negative: bool,
}

#[derive(Template)]
#[template(path = "queue.html", config = "src/admin/console/askama.toml")]
pub struct Queue {
    pub title: &'static str,
    pub nav: Option<Nav>,
    pub flag: String,
    pub q: String,
    pub flag_options: Vec<(&'static str, &'static str)>,
    pub rows: Vec<QueueRow>,
    pub total: usize,
    pub can_release: bool,
}

pub struct ImageView {
    pub href: String,
    pub media: String,
    pub sha256: String,
    /// Shown in the page (PNG); other types are opened.
    pub inline: bool,
}

pub struct ResultRow {
    pub class: String,
    pub initial: String,
    pub initial_cutoff: String,
    pub analyte: String,
    pub confirmation: String,
    pub confirmation_cutoff: String,
    pub unit: String,
    pub source: String,
    pub run: String,
    pub qc: String,
}

/// One result of the specimen's history, counting or not.
pub struct ReceivedRow {
    pub at: String,
    pub kind: String,
    pub test: String,
    pub value: String,
    pub unit: String,
    pub source: String,
    pub run: String,
    pub counts: String,
}

#[derive(Template)]
#[template(path = "specimen.html", config = "src/admin/console/askama.toml")]
pub struct Specimen {
    pub title: String,
    pub nav: Option<Nav>,
    pub csrf: String,
    pub id: String,
    pub state: String,
    pub profile: String,
    pub verdict: String,
    pub held_because: Option<String>,
    pub released: Option<String>,
    pub retest: Option<String>,
    /// Retests asked for and not yet answered.
    pub retests_open: Vec<String>,
    /// Counting results that disagree (the specimen is held until one is marked).
    pub conflicts: Vec<String>,
    pub can_release: bool,
    pub can_retest: bool,
    pub ccf: Vec<(String, String)>,
    pub image: Option<ImageView>,
    pub image_note: String,
    pub certified: Option<String>,
    pub results: Vec<ResultRow>,
    /// Measure, value, unit, source.
    pub validity: Vec<(String, String, String, String)>,
    /// Result, rule, section.
    pub criteria: Vec<(String, String, String)>,
    /// Flaw, status, document.
    pub flaws: Vec<(String, String, String)>,
    /// Flaw, document, recorded by, received.
    pub corrections: Vec<(String, String, String, String)>,
    pub remarks: Vec<String>,
    pub draft: Option<String>,
    /// Set after release: the signed report is shown, not a draft.
    pub sent: Option<String>,
    pub draft_sha: String,
    pub retest_tests: Vec<String>,
    /// When, who, what, before, after.
    pub history: Vec<(String, String, String, String, String)>,
    pub received: Vec<ReceivedRow>,
}
