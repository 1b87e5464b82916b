//! Initial and confirmation drug tests (40.87): "at or above the cutoff".

use super::profile::Profile;
use rust_decimal::Decimal;
use std::collections::BTreeMap;

/// A confirmed positive analyte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Positive {
    pub analyte: String,
    pub class: String,
    pub value: Decimal,
    /// The profile's 40.97(f) threshold was reached: the value is always reported.
    pub always_quantitate: bool,
}

/// The drug-test outcome: every confirmed positive analyte, sorted by key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DrugFindings {
    pub positives: Vec<Positive>,
}

/// Applies the cutoffs. A confirmation value counts only for a class whose initial test was at
/// or above its cutoff (40.87(b)); an analyte's extra requirement (e.g. amphetamine with
/// methamphetamine, morphine before 6-AM) must hold on the confirmation values too.
pub fn test(
    profile: &Profile,
    initial: &BTreeMap<String, Decimal>,
    confirmation: &BTreeMap<String, Decimal>,
) -> DrugFindings {
    let screened = |class_key: &str| -> bool {
        match (profile.class(class_key), initial.get(class_key)) {
            (Some(c), Some(v)) => *v >= c.initial_cutoff,
            _ => false,
        }
    };
    // Confirmation values that were really measured: only for classes that screened positive.
    let confirmed = |analyte: &str| -> Option<Decimal> {
        let (class, _) = profile.analyte(analyte)?;
        if screened(&class.key) {
            confirmation.get(analyte).copied()
        } else {
            None
        }
    };
    let mut positives = Vec::new();
    for class in &profile.classes {
        if !screened(&class.key) {
            continue;
        }
        for a in &class.analytes {
            let Some(value) = confirmed(&a.key) else {
                continue;
            };
            if value < a.confirmation_cutoff {
                continue;
            }
            if let Some(req) = &a.requires {
                match confirmed(&req.analyte) {
                    Some(v) if v >= req.at_least => {}
                    _ => continue,
                }
            }
            let always_quantitate = a.always_quantitate_at.is_some_and(|q| value >= q);
            positives.push(Positive {
                analyte: a.key.clone(),
                class: class.key.clone(),
                value,
                always_quantitate,
            });
        }
    }
    positives.sort_by(|a, b| a.analyte.cmp(&b.analyte));
    DrugFindings { positives }
}
