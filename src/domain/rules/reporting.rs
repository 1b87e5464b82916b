//! Reporting (40.97(a), (e), (f)) and retention (40.99(a)).

use super::profile::{Measure, Profile, Reportable, RequiredValue, ValidityResult};
use super::testing::DrugFindings;
use super::validity::{self, Finding};
use super::{ResultCategory, Specimen, Verdict};
use std::collections::BTreeMap;

/// Assembles the verdict of a specimen that was tested.
pub fn report(
    profile: &Profile,
    specimen: &Specimen,
    findings: &[Finding<'_>],
    drugs: &DrugFindings,
) -> Verdict {
    let mut remarks = Vec::new();
    let mut results = Vec::new();

    if !drugs.positives.is_empty() {
        results.push(ResultCategory::Positive);
    }
    let adulterated = validity::has(findings, ValidityResult::Adulterated);
    let substituted = validity::has(findings, ValidityResult::Substituted);
    let invalid = validity::has(findings, ValidityResult::Invalid);
    if adulterated {
        results.push(ResultCategory::Adulterated);
    }
    if substituted {
        results.push(ResultCategory::Substituted);
    }
    if invalid {
        results.push(ResultCategory::Invalid);
    }
    if results.is_empty() {
        results.push(ResultCategory::Negative);
    }

    // 40.93(a): dilute "unless the criteria for a substituted specimen are met"; 40.97(a) knows
    // dilute only as a qualifier of a negative or positive result.
    let dilute = validity::has(findings, ValidityResult::Dilute)
        && !substituted
        && results
            .iter()
            .any(|r| matches!(r, ResultCategory::Negative | ResultCategory::Positive));

    for f in findings {
        let shown = match f.criterion.result {
            ValidityResult::Dilute => dilute,
            _ => true,
        };
        if shown {
            remarks.push(format!(
                "{}: {} ({}).",
                capitalised(f.criterion.result.key()),
                f.criterion.remark,
                f.criterion.cite
            ));
        }
    }

    let mut quantitations = BTreeMap::new();
    let requested = specimen.mro_requested_quantitation;
    let on_request = &profile.reporting.quantitate_on_request;
    let required = &profile.reporting.values_required;
    for p in &drugs.positives {
        if p.always_quantitate {
            quantitations.insert(p.analyte.clone(), p.value);
            let cite = profile
                .analyte(&p.analyte)
                .and_then(|(_, a)| a.always_quantitate_cite.as_deref())
                .unwrap_or("40.97(f)");
            remarks.push(format!(
                "Quantitative value reported for {} at or above the level that must always be reported ({cite}).",
                analyte_name(profile, &p.analyte)
            ));
        } else if required.contains(&RequiredValue::Positive)
            || (requested && on_request.contains(&Reportable::Positive))
        {
            quantitations.insert(p.analyte.clone(), p.value);
        }
    }
    // The values the edition requires in the report itself (40.97(a) today; none in 2001).
    let value = |m: Measure, q: &mut BTreeMap<String, rust_decimal::Decimal>| {
        if let Some(v) = specimen.validity.get(m) {
            q.insert(m.key().to_string(), v);
        }
    };
    if dilute && required.contains(&RequiredValue::Dilute)
        || substituted && required.contains(&RequiredValue::Substituted)
    {
        value(Measure::Creatinine, &mut quantitations);
        value(Measure::SpecificGravity, &mut quantitations);
    }
    for f in findings {
        let supporting = match f.criterion.result {
            ValidityResult::Adulterated => required.contains(&RequiredValue::Adulterated),
            ValidityResult::Invalid => {
                required.contains(&RequiredValue::InvalidPh) && f.measures.contains(&Measure::Ph)
            }
            _ => false,
        };
        if supporting {
            for m in &f.measures {
                if f.criterion.result == ValidityResult::Adulterated || *m == Measure::Ph {
                    value(*m, &mut quantitations);
                }
            }
        }
    }
    if !required.is_empty() && !quantitations.is_empty() {
        remarks.push(format!(
            "Numerical values reported as the edition requires ({}).",
            profile.reporting.values_cite
        ));
    }
    if requested {
        for f in findings {
            let wanted = match f.criterion.result {
                ValidityResult::Adulterated => on_request.contains(&Reportable::Adulterated),
                ValidityResult::Substituted => on_request.contains(&Reportable::Substituted),
                _ => false,
            };
            if wanted {
                for m in &f.measures {
                    if let Some(v) = specimen.validity.get(*m) {
                        quantitations.insert(m.key().to_string(), v);
                    }
                }
            }
        }
        if !quantitations.is_empty() {
            remarks.push(
                "Quantitative values provided at the MRO's written request (40.97(e)).".to_string(),
            );
        }
    }

    let retain = &profile.reporting.retain_one_year;
    let retain_one_year = results.iter().any(|r| match r {
        ResultCategory::Positive => retain.contains(&Reportable::Positive),
        ResultCategory::Adulterated => retain.contains(&Reportable::Adulterated),
        ResultCategory::Substituted => retain.contains(&Reportable::Substituted),
        ResultCategory::Invalid => retain.contains(&Reportable::Invalid),
        ResultCategory::Negative | ResultCategory::Rejected => false,
    });

    Verdict {
        results,
        dilute,
        positive_analytes: drugs.positives.iter().map(|p| p.analyte.clone()).collect(),
        quantitations,
        redesignated: false,
        hold: None,
        retain_one_year,
        remarks,
    }
}

fn analyte_name<'p>(profile: &'p Profile, key: &'p str) -> &'p str {
    profile
        .analyte(key)
        .map(|(_, a)| a.name.as_str())
        .unwrap_or(key)
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}
