//! Specimen validity (40.91–40.95): which of the profile's criteria a specimen meets.

use super::Validity;
use super::profile::{Atom, Criterion, Measure, Profile, RequiredTest, ValidityResult};
use std::collections::BTreeSet;

/// A criterion that held, with the measures its satisfied comparisons read.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding<'p> {
    pub criterion: &'p Criterion,
    pub measures: BTreeSet<Measure>,
}

/// Every validity criterion of the profile that the specimen meets, in profile order.
pub fn assess<'p>(profile: &'p Profile, v: &Validity) -> Vec<Finding<'p>> {
    profile
        .validity
        .iter()
        .filter_map(|c| {
            meets(c, v).map(|measures| Finding {
                criterion: c,
                measures,
            })
        })
        .collect()
}

/// `Some(measures read)` when every clause holds.
fn meets(c: &Criterion, v: &Validity) -> Option<BTreeSet<Measure>> {
    let mut used = BTreeSet::new();
    for clause in &c.clauses {
        let mut any = false;
        for atom in clause {
            if atom_holds(atom, v) {
                any = true;
                if let Atom::Compare { measure, .. } = atom {
                    used.insert(*measure);
                }
            }
        }
        if !any {
            return None;
        }
    }
    Some(used)
}

fn atom_holds(atom: &Atom, v: &Validity) -> bool {
    match atom {
        Atom::Compare { measure, op, limit } => match v.get(*measure) {
            Some(value) => op.holds(value, *limit),
            None => false,
        },
        Atom::AdulterantIdentified => !v.adulterants.is_empty(),
        Atom::Interference => v.interference,
    }
}

/// True when one clause of a criterion holds (any of its atoms does).
pub fn clause_holds(clause: &[Atom], v: &Validity) -> bool {
    clause.iter().any(|atom| atom_holds(atom, v))
}

/// The validity tests the edition requires of this specimen that are not done yet (40.91 in
/// 2001, 40.87 today), in profile order. A test is done when one of its `done_by` targets is a
/// measure with a value or an identified adulterant in `v`, or when `checked(target)` says an
/// interference check of that name is on file.
pub fn missing_tests<'p>(
    profile: &'p Profile,
    v: &Validity,
    checked: &dyn Fn(&str) -> bool,
) -> Vec<&'p RequiredTest> {
    let done = |target: &str| {
        Measure::from_key(target).is_some_and(|m| v.get(m).is_some())
            || v.adulterants.iter().any(|a| a == target)
            || checked(target)
    };
    profile
        .validity_tests
        .iter()
        .filter(|t| t.when.iter().all(|c| clause_holds(c, v)))
        .filter(|t| !t.done_by.iter().any(|d| done(d)))
        .collect()
}

/// True when any finding establishes `r`.
pub fn has(findings: &[Finding<'_>], r: ValidityResult) -> bool {
    findings.iter().any(|f| f.criterion.result == r)
}
