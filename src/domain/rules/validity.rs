//! Specimen validity (40.91–40.95): which of the profile's criteria a specimen meets.

use super::Validity;
use super::profile::{Atom, Criterion, Measure, Profile, ValidityResult};
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

/// True when any finding establishes `r`.
pub fn has(findings: &[Finding<'_>], r: ValidityResult) -> bool {
    findings.iter().any(|f| f.criterion.result == r)
}
