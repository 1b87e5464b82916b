//! The parties the domain names: this laboratory and the MROs of its directory (which
//! `app::config` builds from its sections; nothing here knows of files, endpoints or
//! certificates), and a party as a CCF names it.

use serde::{Deserialize, Serialize};

/// This laboratory, as every report names it (40.97(b)(1)(i)(A)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Laboratory {
    pub name: String,
    pub address: String,
}

/// An MRO of the laboratory's directory: the only kind of destination a report can have
/// (40.97(b)). `id` is the directory id written on CCFs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mro {
    pub id: String,
    pub name: String,
    pub address: String,
}

/// A party named on the CCF.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Party {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}
