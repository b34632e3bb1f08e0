use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;

use arcstr::ArcStr;

use crate::{Error, Found};

/// A validated LUCI project name: non-empty, `a-z 0-9 - _`, starting with a
/// lowercase letter. Cloning shares one allocation.
///
/// ```
/// use coordinator_types::ProjectName;
///
/// let p: ProjectName = "chromium".parse()?;
/// assert_eq!(p.as_str(), "chromium");
/// assert!("Chromium".parse::<ProjectName>().is_err());
/// # Ok::<(), coordinator_types::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProjectName(ArcStr);

impl ProjectName {
    /// Checks `name` against the project name rules.
    pub fn validate(name: &str) -> Result<(), Error> {
        let bytes = name.as_bytes();
        let Some(&first) = bytes.first() else {
            return Err(Error::EmptyProject);
        };
        if !first.is_ascii_lowercase() {
            return Err(Error::ProjectStart {
                found: Found::at(bytes, 0),
            });
        }
        for (index, &b) in bytes.iter().enumerate().skip(1) {
            if !(b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_') {
                return Err(Error::ProjectCharacter {
                    index,
                    found: Found::at(bytes, index),
                });
            }
        }
        Ok(())
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ProjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ProjectName").field(&&*self.0).finish()
    }
}

impl fmt::Display for ProjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ProjectName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for ProjectName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl FromStr for ProjectName {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::validate(s)?;
        Ok(ProjectName(ArcStr::from(s)))
    }
}

impl TryFrom<&str> for ProjectName {
    type Error = Error;

    fn try_from(s: &str) -> Result<Self, Error> {
        s.parse()
    }
}

impl TryFrom<String> for ProjectName {
    type Error = Error;

    fn try_from(s: String) -> Result<Self, Error> {
        Self::validate(&s)?;
        Ok(ProjectName(ArcStr::from(s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors() {
        for ok in ["a", "foo_bar-baz-059"] {
            assert_eq!(ok.parse::<ProjectName>().unwrap().as_str(), ok);
        }
        assert_eq!(ProjectName::validate(""), Err(Error::EmptyProject));
        assert_eq!(
            ProjectName::validate("foo/bar"),
            Err(Error::ProjectCharacter {
                index: 3,
                found: Found::Char('/')
            })
        );
        assert_eq!(
            ProjectName::validate("_name"),
            Err(Error::ProjectStart {
                found: Found::Char('_')
            })
        );
        assert_eq!(
            ProjectName::validate("1eet"),
            Err(Error::ProjectStart {
                found: Found::Char('1')
            })
        );
        assert!(ProjectName::validate("fooBar").is_err());
        assert!(ProjectName::validate(&"a".repeat(10_000)).is_ok());
        assert_eq!(
            ProjectName::validate("foo/bar").unwrap_err().to_string(),
            "project name has invalid character '/' at byte 3"
        );
    }
}
