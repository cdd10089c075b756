//! Where a caller may change things: the site/line scope of an API token. Checked by the
//! owning actor (in `decide`), where the machine's current site and line are known and no
//! concurrent line move can slip between the check and the write.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::domain::{InvalidField, Line, Site, check_token};

/// One area a token covers: everything, a whole site, or one line of a site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Area {
    /// `*`
    Everywhere,
    /// `<site>`
    Site(String),
    /// `<site>/<line>`
    Line(String, String),
}

impl Area {
    /// Parses `*`, `<site>` or `<site>/<line>` (each part a token).
    pub fn parse(value: &str) -> Result<Self, InvalidField> {
        if value == "*" {
            return Ok(Area::Everywhere);
        }
        match value.split_once('/') {
            None => {
                check_token("scope", value)?;
                Ok(Area::Site(value.to_string()))
            }
            Some((site, line)) => {
                check_token("scope", site)?;
                check_token("scope", line)?;
                Ok(Area::Line(site.to_string(), line.to_string()))
            }
        }
    }

    pub fn covers(&self, site: &Site, line: &Line) -> bool {
        match self {
            Area::Everywhere => true,
            Area::Site(s) => s == site.as_str(),
            Area::Line(s, l) => s == site.as_str() && l == line.as_str(),
        }
    }
}

impl fmt::Display for Area {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Area::Everywhere => f.write_str("*"),
            Area::Site(s) => f.write_str(s),
            Area::Line(s, l) => write!(f, "{s}/{l}"),
        }
    }
}

impl TryFrom<String> for Area {
    type Error = InvalidField;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Area::parse(&value)
    }
}

impl From<Area> for String {
    fn from(area: Area) -> Self {
        area.to_string()
    }
}

/// The areas a caller may change. An empty scope covers nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Scope(pub Vec<Area>);

impl Scope {
    pub fn everywhere() -> Self {
        Scope(vec![Area::Everywhere])
    }

    pub fn covers(&self, site: &Site, line: &Line) -> bool {
        self.0.iter().any(|a| a.covers(site, line))
    }

    pub fn is_everywhere(&self) -> bool {
        self.0.contains(&Area::Everywhere)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(site: &str, line: &str) -> (Site, Line) {
        (Site::parse(site).unwrap(), Line::parse(line).unwrap())
    }

    #[test]
    fn areas_cover_what_they_name() {
        let (s, l) = at("plant1", "press");
        assert!(Area::parse("*").unwrap().covers(&s, &l));
        assert!(Area::parse("plant1").unwrap().covers(&s, &l));
        assert!(Area::parse("plant1/press").unwrap().covers(&s, &l));
        assert!(!Area::parse("plant1/kiln").unwrap().covers(&s, &l));
        assert!(!Area::parse("plant2").unwrap().covers(&s, &l));
        assert!(!Area::parse("plant2/press").unwrap().covers(&s, &l));
        assert!(!Scope::default().covers(&s, &l));
    }

    #[test]
    fn malformed_areas_are_refused() {
        for bad in ["", "a/b/c", "a.b", "*/x", "a/", "/b", "a b"] {
            assert!(Area::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn scopes_round_trip_as_strings() {
        let scope: Scope = serde_json::from_str(r#"["plant1/press","plant2","*"]"#).unwrap();
        assert_eq!(scope.0.len(), 3);
        assert_eq!(
            serde_json::to_string(&scope).unwrap(),
            r#"["plant1/press","plant2","*"]"#
        );
    }
}
