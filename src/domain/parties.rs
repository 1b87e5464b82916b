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
    /// The MRO's general written request for quantitative values (40.97(e) of the 2001
    /// edition): the reference of the document on file; it covers every result to this MRO.
    pub quantitation_request: Option<String>,
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

/// The words of a person's or practice's name as compared: lower case, punctuation dropped
/// (dots removed, other marks as spaces), the titles and degrees "Dr", "MD" and "DO" left out,
/// in sorted order ("Smith, Pat" is "Pat Smith").
fn name_words(name: &str) -> Vec<String> {
    let cleaned: String = name
        .chars()
        .filter(|c| *c != '.')
        .map(|c| {
            if c.is_alphanumeric() {
                c.to_lowercase().next().unwrap_or(c)
            } else {
                ' '
            }
        })
        .collect();
    let mut words: Vec<String> = cleaned
        .split_whitespace()
        .filter(|w| !matches!(*w, "dr" | "md" | "do"))
        .map(str::to_string)
        .collect();
    words.sort();
    words
}

/// Whether the MRO name on a CCF is the name of the directory entry its id points to, up to
/// case, whitespace, punctuation, word order and the titles "Dr."/"MD"/"DO". Anything else (a
/// different surname, a missing word) is a mismatch: a mistyped directory id must never send a
/// donor's result to another real MRO.
pub fn mro_names_match(ccf_name: &str, directory_name: &str) -> bool {
    let a = name_words(ccf_name);
    !a.is_empty() && a == name_words(directory_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mro_names_match_up_to_case_punctuation_and_titles() {
        for (ccf, dir) in [
            ("Dr. Pat Example, MD", "Dr. Pat Example, MD"),
            ("pat example", "Dr. Pat Example, MD"),
            ("PAT  EXAMPLE M.D.", "Dr. Pat Example, MD"),
            ("Example, Pat", "Dr. Pat Example, MD"),
            ("Dr Pat Example-Jones", "Pat Example Jones, M.D."),
        ] {
            assert!(mro_names_match(ccf, dir), "{ccf} / {dir}");
        }
        for (ccf, dir) in [
            ("Dr. Pat Sample, MD", "Dr. Pat Example, MD"),
            ("Pat", "Dr. Pat Example, MD"),
            ("Dr. MD", "Dr. MD"),
            ("", ""),
        ] {
            assert!(!mro_names_match(ccf, dir), "{ccf} / {dir}");
        }
    }
}
