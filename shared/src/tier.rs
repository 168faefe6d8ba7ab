//! Model tiers and complexity classes.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A model tier, shown on the wire as `Q2`/`Q3`/`Q4`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Tier {
    /// The fast tier (internal name `fast`).
    Q2,
    /// The balanced tier (internal name `balanced`).
    Q3,
    /// The powerful tier (internal name `powerful`).
    Q4,
}

impl Tier {
    /// Every tier, in the order the status lists them.
    pub const ALL: [Tier; 3] = [Tier::Q2, Tier::Q3, Tier::Q4];

    /// The wire label: `Q2`, `Q3` or `Q4`.
    pub const fn label(self) -> &'static str {
        match self {
            Tier::Q2 => "Q2",
            Tier::Q3 => "Q3",
            Tier::Q4 => "Q4",
        }
    }

    /// The router's internal name: `fast`, `balanced` or `powerful`.
    pub const fn internal_name(self) -> &'static str {
        match self {
            Tier::Q2 => "fast",
            Tier::Q3 => "balanced",
            Tier::Q4 => "powerful",
        }
    }

    /// Position in [`Tier::ALL`], for per-tier arrays.
    pub const fn index(self) -> usize {
        match self {
            Tier::Q2 => 0,
            Tier::Q3 => 1,
            Tier::Q4 => 2,
        }
    }

    /// Parses one of the six accepted names (`fast`/`balanced`/`powerful` or
    /// `Q2`/`Q3`/`Q4`), exactly as written.
    pub fn from_name(name: &str) -> Option<Tier> {
        match name {
            "fast" | "Q2" => Some(Tier::Q2),
            "balanced" | "Q3" => Some(Tier::Q3),
            "powerful" | "Q4" => Some(Tier::Q4),
            _ => None,
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

impl FromStr for Tier {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Tier::from_name(s).ok_or_else(|| {
            format!("unknown tier {s:?}: expected one of fast, balanced, powerful, Q2, Q3, Q4")
        })
    }
}

/// How demanding a query is, derived from its score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "UPPERCASE")]
pub enum Complexity {
    /// `score < 3.0`.
    Simple,
    /// `3.0 <= score < 7.0`.
    Moderate,
    /// `score >= 7.0`.
    Complex,
}

impl Complexity {
    /// Lower bound (inclusive) of MODERATE.
    pub const MODERATE_FROM: f64 = 3.0;
    /// Lower bound (inclusive) of COMPLEX.
    pub const COMPLEX_FROM: f64 = 7.0;

    /// The class of an already validated score.
    pub fn from_score(score: f64) -> Complexity {
        if score < Self::MODERATE_FROM {
            Complexity::Simple
        } else if score < Self::COMPLEX_FROM {
            Complexity::Moderate
        } else {
            Complexity::Complex
        }
    }

    /// The wire label: `SIMPLE`, `MODERATE` or `COMPLEX`.
    pub const fn label(self) -> &'static str {
        match self {
            Complexity::Simple => "SIMPLE",
            Complexity::Moderate => "MODERATE",
            Complexity::Complex => "COMPLEX",
        }
    }
}

impl fmt::Display for Complexity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// One value per tier, indexed by the tier itself: `per_tier[Tier::Q4]`,
/// never a position. On the wire it is the array `[Q2, Q3, Q4]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PerTier<T>(pub [T; 3]);

impl<T> PerTier<T> {
    /// The value of each tier, from `f`.
    pub fn from_fn(mut f: impl FnMut(Tier) -> T) -> Self {
        PerTier(Tier::ALL.map(&mut f))
    }

    /// Each tier with its value, in the order of [`Tier::ALL`].
    pub fn iter(&self) -> impl Iterator<Item = (Tier, &T)> {
        Tier::ALL.into_iter().zip(&self.0)
    }

    /// Each tier's value through `f`.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> PerTier<U> {
        PerTier(self.0.map(f))
    }

    /// The values, in the order of [`Tier::ALL`].
    pub fn values(&self) -> &[T; 3] {
        &self.0
    }
}

impl<T> std::ops::Index<Tier> for PerTier<T> {
    type Output = T;

    fn index(&self, tier: Tier) -> &T {
        &self.0[tier.index()]
    }
}

impl<T> std::ops::IndexMut<Tier> for PerTier<T> {
    fn index_mut(&mut self, tier: Tier) -> &mut T {
        &mut self.0[tier.index()]
    }
}

impl<T: PartialEq> PartialEq<[T; 3]> for PerTier<T> {
    fn eq(&self, other: &[T; 3]) -> bool {
        self.0 == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_tier_values_are_found_by_their_tier_and_sent_as_an_array() {
        let mut t = PerTier::from_fn(|tier| tier.label().to_owned());
        assert_eq!(t[Tier::Q3], "Q3");
        t[Tier::Q4].push('!');
        assert_eq!(
            t.iter()
                .map(|(tier, v)| format!("{tier}={v}"))
                .collect::<Vec<_>>(),
            ["Q2=Q2", "Q3=Q3", "Q4=Q4!"]
        );
        assert_eq!(serde_json::to_string(&t).unwrap(), r#"["Q2","Q3","Q4!"]"#);
        let back: PerTier<String> = serde_json::from_str(r#"["a","b","c"]"#).unwrap();
        assert_eq!(back.map(|v| v.len()), PerTier([1, 1, 1]));
    }

    #[test]
    fn internal_names_map_to_wire_labels() {
        assert_eq!(Tier::from_name("fast"), Some(Tier::Q2));
        assert_eq!(Tier::from_name("balanced"), Some(Tier::Q3));
        assert_eq!(Tier::from_name("powerful"), Some(Tier::Q4));
        for tier in Tier::ALL {
            assert_eq!(Tier::from_name(tier.label()), Some(tier));
            assert_eq!(Tier::from_name(tier.internal_name()), Some(tier));
            assert_eq!(Tier::ALL[tier.index()], tier);
        }
    }

    #[test]
    fn other_tier_names_are_rejected() {
        for bad in ["", "Q1", "Q5", "q2", "FAST", " fast", "medium", "slow"] {
            assert_eq!(Tier::from_name(bad), None, "{bad:?}");
            assert!(bad.parse::<Tier>().is_err());
        }
    }

    #[test]
    fn complexity_thresholds() {
        let cases = [
            (0.0, Complexity::Simple),
            (2.999, Complexity::Simple),
            (3.0, Complexity::Moderate),
            (6.999, Complexity::Moderate),
            (7.0, Complexity::Complex),
            (15.0, Complexity::Complex),
        ];
        for (score, want) in cases {
            assert_eq!(Complexity::from_score(score), want, "score {score}");
        }
    }

    #[test]
    fn wire_labels() {
        assert_eq!(serde_json_string(&Tier::Q3), "\"Q3\"");
        assert_eq!(serde_json_string(&Complexity::Moderate), "\"MODERATE\"");
    }

    fn serde_json_string<T: Serialize>(v: &T) -> String {
        serde_json::to_string(v).unwrap()
    }
}
