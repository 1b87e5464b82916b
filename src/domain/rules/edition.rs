//! Editions chosen per specimen: which loaded profile judges a specimen, from its program, its
//! specimen type and the date its editions select by (the CCF collection date for the DOT
//! editions, the date received for the HHS 2025 panels).
//!
//! Pure: profiles and dates in, a profile or the reason there is none out. A date that no
//! loaded profile covers is [`NoEdition::NotCovered`] — the specimen is held, never judged by a
//! neighbouring edition.

use super::profile::{Period, Profile, ProfileSet, Program, SelectingDate, SpecimenType};
use crate::domain::calendar::Date;
use std::fmt;

/// Why no edition applies to a specimen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoEdition {
    /// No profile at all is loaded for this program and specimen type.
    NoProfile {
        program: Program,
        specimen_type: SpecimenType,
    },
    /// The editions of this program and specimen type select by a date the specimen lacks.
    NoDate {
        program: Program,
        specimen_type: SpecimenType,
        selected_by: SelectingDate,
    },
    /// The selecting date falls in no loaded edition's period.
    NotCovered {
        program: Program,
        specimen_type: SpecimenType,
        selected_by: SelectingDate,
        date: Date,
    },
}

/// The words the daemon's hold and `evaluate`'s error start with.
pub const NO_EDITION_FOR_DATE: &str = "no edition shipped for this date";

impl fmt::Display for NoEdition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoEdition::NoProfile {
                program,
                specimen_type,
            } => write!(
                f,
                "no edition shipped for {} {} specimens",
                program.key(),
                specimen_type.key()
            ),
            NoEdition::NoDate {
                program,
                specimen_type,
                selected_by,
            } => write!(
                f,
                "{}: the editions for {} {} specimens are chosen by it, and it is missing",
                selected_by.key(),
                program.key(),
                specimen_type.key()
            ),
            NoEdition::NotCovered {
                program,
                specimen_type,
                selected_by,
                date,
            } => write!(
                f,
                "{NO_EDITION_FOR_DATE} ({} {}, {} {date})",
                program.key(),
                specimen_type.key(),
                selected_by.key()
            ),
        }
    }
}

impl std::error::Error for NoEdition {}

/// The edition that judges a specimen of `program` and `specimen_type`: the one loaded profile
/// of that program and specimen type whose period covers the specimen's selecting date
/// (`collected_on` or `received_on`, as the profiles of that group declare).
///
/// The set must have passed [`conflicts`] (one selecting date per group, no overlapping
/// periods): then at most one profile matches.
pub fn select(
    profiles: &ProfileSet,
    program: Program,
    specimen_type: SpecimenType,
    collected_on: Option<Date>,
    received_on: Option<Date>,
) -> Result<&Profile, NoEdition> {
    let mut group = profiles
        .iter()
        .filter(|p| p.program == program && p.specimen_type == specimen_type)
        .peekable();
    let Some(first) = group.peek() else {
        return Err(NoEdition::NoProfile {
            program,
            specimen_type,
        });
    };
    let selected_by = first.period.selected_by;
    let date = match selected_by {
        SelectingDate::CollectedOn => collected_on,
        SelectingDate::ReceivedOn => received_on,
    };
    let Some(date) = date else {
        return Err(NoEdition::NoDate {
            program,
            specimen_type,
            selected_by,
        });
    };
    group
        .find(|p| p.period.selected_by == selected_by && p.period.covers(date))
        .ok_or(NoEdition::NotCovered {
            program,
            specimen_type,
            selected_by,
            date,
        })
}

/// Two loaded profiles that could both claim a specimen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The two profiles' names (= file stems), in name order.
    pub profiles: (String, String),
    pub problem: String,
}

/// Every pair of profiles of the same program and specimen type that overlap or select by
/// different dates (either would make [`select`] ambiguous). Empty for a usable set.
pub fn conflicts(profiles: &ProfileSet) -> Vec<Conflict> {
    let all: Vec<&Profile> = profiles.iter().collect();
    let mut out = Vec::new();
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            if a.program != b.program || a.specimen_type != b.specimen_type {
                continue;
            }
            let group = format!("{} {}", a.program.key(), a.specimen_type.key());
            let problem = if a.period.selected_by != b.period.selected_by {
                Some(format!(
                    "both are {group} editions but one selects by {} and the other by {}",
                    a.period.selected_by.key(),
                    b.period.selected_by.key()
                ))
            } else if a.period.overlaps(&b.period) {
                Some(format!(
                    "both are {group} editions and their periods overlap ({}: {}; {}: {})",
                    a.name,
                    period_text(&a.period),
                    b.name,
                    period_text(&b.period)
                ))
            } else {
                None
            };
            if let Some(problem) = problem {
                out.push(Conflict {
                    profiles: (a.name.clone(), b.name.clone()),
                    problem,
                });
            }
        }
    }
    out
}

fn period_text(p: &Period) -> String {
    p.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::rules::Profile;

    fn d(s: &str) -> Date {
        s.parse().unwrap()
    }

    fn shipped() -> ProfileSet {
        let mut set = ProfileSet::new();
        for (n, t) in [
            (
                "part40-2001",
                include_str!("../../../config/profiles/part40-2001.toml"),
            ),
            (
                "part40-2023",
                include_str!("../../../config/profiles/part40-2023.toml"),
            ),
        ] {
            set.insert(Profile::parse(t, Some(n)).unwrap());
        }
        set
    }

    fn dot_urine(set: &ProfileSet, collected: &str) -> Result<String, NoEdition> {
        select(
            set,
            Program::Dot,
            SpecimenType::Urine,
            Some(d(collected)),
            None,
        )
        .map(|p| p.name.clone())
    }

    #[test]
    fn dot_urine_edges_of_the_2001_edition() {
        let set = shipped();
        assert!(matches!(
            dot_urine(&set, "2001-07-31"),
            Err(NoEdition::NotCovered { .. })
        ));
        assert_eq!(dot_urine(&set, "2001-08-01").unwrap(), "part40-2001");
        assert_eq!(dot_urine(&set, "2001-08-02").unwrap(), "part40-2001");
        assert_eq!(dot_urine(&set, "2010-09-29").unwrap(), "part40-2001");
        assert_eq!(dot_urine(&set, "2010-09-30").unwrap(), "part40-2001");
        // The 2010 edition is not shipped: the day after is held, never judged by 2001.
        let e = dot_urine(&set, "2010-10-01").unwrap_err();
        assert_eq!(
            e,
            NoEdition::NotCovered {
                program: Program::Dot,
                specimen_type: SpecimenType::Urine,
                selected_by: SelectingDate::CollectedOn,
                date: d("2010-10-01"),
            }
        );
        assert!(e.to_string().starts_with(NO_EDITION_FOR_DATE), "{e}");
    }

    #[test]
    fn dot_urine_edges_of_todays_table() {
        let set = shipped();
        assert!(matches!(
            dot_urine(&set, "2017-12-31"),
            Err(NoEdition::NotCovered { .. })
        ));
        assert_eq!(dot_urine(&set, "2018-01-01").unwrap(), "part40-2023");
        assert_eq!(dot_urine(&set, "2018-01-02").unwrap(), "part40-2023");
        assert_eq!(dot_urine(&set, "2023-05-31").unwrap(), "part40-2023");
        assert_eq!(dot_urine(&set, "2023-06-01").unwrap(), "part40-2023");
        assert_eq!(dot_urine(&set, "2026-10-15").unwrap(), "part40-2023");
        assert_eq!(dot_urine(&set, "9999-12-31").unwrap(), "part40-2023");
    }

    #[test]
    fn the_received_date_does_not_choose_a_dot_edition() {
        let set = shipped();
        // Collected under 2001, received today: still 2001.
        let p = select(
            &set,
            Program::Dot,
            SpecimenType::Urine,
            Some(d("2010-09-30")),
            Some(d("2026-01-05")),
        )
        .unwrap();
        assert_eq!(p.name, "part40-2001");
        // Without the collection date there is no DOT edition to choose.
        let e = select(
            &set,
            Program::Dot,
            SpecimenType::Urine,
            None,
            Some(d("2026-01-05")),
        )
        .unwrap_err();
        assert!(matches!(e, NoEdition::NoDate { .. }), "{e}");
    }

    #[test]
    fn a_group_without_profiles_is_named() {
        let mut set = ProfileSet::new();
        set.insert(
            Profile::parse(
                include_str!("../../../config/profiles/part40-2001.toml"),
                Some("part40-2001"),
            )
            .unwrap(),
        );
        let e = select(
            &set,
            Program::Hhs,
            SpecimenType::Urine,
            Some(d("2026-01-05")),
            Some(d("2026-01-05")),
        )
        .unwrap_err();
        assert!(matches!(e, NoEdition::NoProfile { .. }), "{e}");
    }

    fn with_period(name: &str, selected_by: &str, from: &str, to: Option<&str>) -> Profile {
        let text = include_str!("../../../config/profiles/part40-2001.toml");
        let start = text.find("[period]").unwrap();
        let end = start + text[start..].find("\n\n").unwrap();
        let to = to.map(|t| format!("to = \"{t}\"\n")).unwrap_or_default();
        let period = format!(
            "[period]\nselected_by = \"{selected_by}\"\nfrom = \"{from}\"\n{to}cite = \"test\""
        );
        let text = format!("{}{}{}", &text[..start], period, &text[end..])
            .replace("name = \"part40-2001\"", &format!("name = \"{name}\""));
        Profile::parse(&text, Some(name)).unwrap()
    }

    #[test]
    fn overlapping_periods_are_conflicts_naming_both() {
        let mut set = ProfileSet::new();
        set.insert(with_period(
            "a",
            "collected_on",
            "2001-08-01",
            Some("2010-09-30"),
        ));
        set.insert(with_period("b", "collected_on", "2010-09-30", None));
        let c = conflicts(&set);
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[0].profiles, ("a".to_string(), "b".to_string()));
        assert!(c[0].problem.contains("overlap"), "{}", c[0].problem);

        // Touching, not overlapping: fine.
        let mut set = ProfileSet::new();
        set.insert(with_period(
            "a",
            "collected_on",
            "2001-08-01",
            Some("2010-09-30"),
        ));
        set.insert(with_period("b", "collected_on", "2010-10-01", None));
        assert!(conflicts(&set).is_empty());

        // Two open-ended periods overlap.
        let mut set = ProfileSet::new();
        set.insert(with_period("a", "collected_on", "2018-01-01", None));
        set.insert(with_period("b", "collected_on", "2030-01-01", None));
        assert_eq!(conflicts(&set).len(), 1);

        // One period inside another.
        let mut set = ProfileSet::new();
        set.insert(with_period("a", "collected_on", "2001-01-01", None));
        set.insert(with_period(
            "b",
            "collected_on",
            "2005-01-01",
            Some("2005-01-01"),
        ));
        assert_eq!(conflicts(&set).len(), 1);
    }

    #[test]
    fn mixed_selecting_dates_in_one_group_are_a_conflict() {
        let mut set = ProfileSet::new();
        set.insert(with_period(
            "a",
            "collected_on",
            "2001-08-01",
            Some("2010-09-30"),
        ));
        set.insert(with_period("b", "received_on", "2025-07-07", None));
        let c = conflicts(&set);
        assert_eq!(c.len(), 1);
        assert!(c[0].problem.contains("received_on"), "{}", c[0].problem);
    }

    #[test]
    fn the_shipped_profiles_do_not_conflict() {
        assert!(conflicts(&shipped()).is_empty());
    }

    #[test]
    fn a_period_ending_before_it_starts_is_refused() {
        let text = include_str!("../../../config/profiles/part40-2001.toml")
            .replace("to = \"2010-09-30\"", "to = \"2001-07-31\"");
        let e = Profile::parse(&text, Some("part40-2001")).unwrap_err();
        assert_eq!(e.problems[0].key, "period.to", "{e}");
    }
}
