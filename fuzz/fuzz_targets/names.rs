//! Stream name, stream path and project name parsing, differential against a
//! plain reference of the rules in `docs/behaviour.md` §2, written here
//! independently of `coordinator-types` (segment by segment rather than one
//! byte-state pass).
//!
//! For every input (raw bytes, and as text when it is UTF-8) the target checks
//! that the library and the reference agree on the exact result, error variant
//! and position included, for `StreamName::validate{,_bytes}`, `path::split`,
//! `path::validate`, `path::validate_partial`, `ProjectName::validate` and
//! `PrefixSecret::from_bytes`; and, for what parses, the round trips: segments,
//! split, namespaces, join/split, `to_parts`, `split_last`.
#![no_main]

use coordinator_types::{
    Error, Found, PathPart, PrefixSecret, ProjectName, StreamName, StreamPath, path,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check_name_bytes(data);
    check_secret(data);
    if let Ok(text) = std::str::from_utf8(data) {
        check_name(text);
        check_path(text);
        check_project(text);
    }
});

// ---------------------------------------------------------------------------
// The reference.

const MAX_NAME: usize = 4096;

/// The character (or invalid byte) that starts at `bytes[at]`: the shortest
/// prefix of at most 4 bytes that is valid UTF-8, else the raw byte.
fn ref_found(bytes: &[u8], at: usize) -> Found {
    for len in 1..=4 {
        let Some(chunk) = bytes.get(at..at + len) else {
            break;
        };
        if let Ok(s) = std::str::from_utf8(chunk) {
            return Found::Char(s.chars().next().expect("non-empty chunk"));
        }
    }
    Found::Byte(bytes[at])
}

fn ref_is_start(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_lowercase() || b.is_ascii_digit()
}

fn ref_is_rest(b: u8) -> bool {
    ref_is_start(b) || b".:_-".contains(&b)
}

/// The StreamName rules (`docs/behaviour.md` §2), segment by segment: empty,
/// too long, then each segment left to right (its start, then its other
/// characters; an empty segment fails at its start, unless it is the last one:
/// a trailing `/`).
fn ref_validate_name(name: &[u8]) -> Result<(), Error> {
    if name.is_empty() {
        return Err(Error::EmptyName);
    }
    if name.len() > MAX_NAME {
        return Err(Error::NameTooLong {
            len: name.len(),
            max: MAX_NAME,
        });
    }
    let segments: Vec<&[u8]> = name.split(|&b| b == b'/').collect();
    let mut offset = 0;
    for (n, segment) in segments.iter().enumerate() {
        let last = n + 1 == segments.len();
        match segment.split_first() {
            None if last => return Err(Error::TrailingSeparator),
            None => {
                return Err(Error::InvalidSegmentStart {
                    offset,
                    found: Found::Char('/'),
                });
            }
            Some((&first, rest)) => {
                if !ref_is_start(first) {
                    return Err(Error::InvalidSegmentStart {
                        offset,
                        found: ref_found(name, offset),
                    });
                }
                if let Some(i) = rest.iter().position(|&b| !ref_is_rest(b)) {
                    let index = offset + 1 + i;
                    return Err(Error::IllegalCharacter {
                        index,
                        found: ref_found(name, index),
                    });
                }
            }
        }
        offset += segment.len() + 1;
    }
    Ok(())
}

/// Splits at the first segment that is exactly `+`: `Some((prefix, name))`
/// with the segments before and after it, or `None` if there is none.
fn ref_split(path: &str) -> Option<(String, String)> {
    let segments: Vec<&str> = path.split('/').collect();
    let at = segments.iter().position(|s| *s == "+")?;
    Some((segments[..at].join("/"), segments[at + 1..].join("/")))
}

fn ref_part(part: &str, which: PathPart) -> Result<(), Error> {
    ref_validate_name(part.as_bytes()).map_err(|e| Error::InvalidPathPart {
        part: which,
        source: Box::new(e),
    })
}

fn ref_validate_path(path: &str) -> Result<(), Error> {
    let (prefix, name) = ref_split(path).ok_or(Error::MissingPathSeparator)?;
    ref_part(&prefix, PathPart::Prefix)?;
    ref_part(&name, PathPart::Name)
}

fn ref_validate_partial(path: &str) -> Result<(), Error> {
    let (prefix, name) = ref_split(path).unwrap_or_else(|| (path.to_owned(), String::new()));
    if !prefix.is_empty() {
        ref_part(&prefix, PathPart::Prefix)?;
    }
    if !name.is_empty() {
        ref_part(&name, PathPart::Name)?;
    }
    Ok(())
}

/// The ProjectName rules (`docs/behaviour.md` §2).
fn ref_validate_project(name: &str) -> Result<(), Error> {
    let bytes = name.as_bytes();
    if bytes.is_empty() {
        return Err(Error::EmptyProject);
    }
    if !bytes[0].is_ascii_lowercase() {
        return Err(Error::ProjectStart {
            found: ref_found(bytes, 0),
        });
    }
    for index in 1..bytes.len() {
        let b = bytes[index];
        let ok = b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_';
        if !ok {
            return Err(Error::ProjectCharacter {
                index,
                found: ref_found(bytes, index),
            });
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The checks.

fn check_name_bytes(data: &[u8]) {
    let expected = ref_validate_name(data);
    assert_eq!(
        StreamName::validate_bytes(data),
        expected,
        "validate_bytes({data:?})"
    );
    if let Err(e) = &expected {
        // Errors render without panicking and say where.
        let _ = e.to_string();
    }
}

fn check_name(text: &str) {
    let expected = ref_validate_name(text.as_bytes());
    assert_eq!(StreamName::validate(text), expected, "validate({text:?})");
    let parsed = text.parse::<StreamName>();
    assert_eq!(parsed.is_ok(), expected.is_ok(), "parse({text:?})");
    let Ok(name) = parsed else { return };

    assert_eq!(name.as_str(), text);
    assert_eq!(StreamName::try_from(text.to_owned()).as_ref(), Ok(&name));
    let segments: Vec<&str> = text.split('/').collect();
    assert_eq!(name.segments().collect::<Vec<_>>(), segments);
    assert_eq!(name.segment_count(), segments.len());
    let split = text.rsplit_once('/').unwrap_or(("", text));
    assert_eq!(name.split(), split);
    // Namespaces: every proper parent followed by '/', innermost first, then "".
    let mut namespaces: Vec<String> = (1..segments.len())
        .rev()
        .map(|n| format!("{}/", segments[..n].join("/")))
        .collect();
    namespaces.push(String::new());
    assert_eq!(name.namespaces().collect::<Vec<_>>(), namespaces);
    assert_eq!(name.as_namespace(), format!("{text}/"));

    // Join: the path `name/+/name` and `name/+/last-segment` split back.
    let last: StreamName = split.1.parse().expect("a segment of a valid name is valid");
    for (prefix, tail) in [(&name, &name), (&name, &last), (&last, &name)] {
        let joined: StreamPath = prefix.join(tail);
        let expected_text = format!("{prefix}/+/{tail}");
        assert_eq!(joined.as_str(), expected_text);
        assert_eq!(path::validate(joined.as_str()), Ok(()));
        assert_eq!(
            path::split(joined.as_str()),
            (prefix.as_str(), tail.as_str())
        );
        assert_eq!(joined.split(), (prefix.as_str(), tail.as_str()));
        assert_eq!(joined.to_parts(), (prefix.clone(), tail.clone()));
        assert_eq!(expected_text.parse::<StreamPath>().as_ref(), Ok(&joined));
    }
}

fn check_path(text: &str) {
    let expected_split = ref_split(text);
    let (prefix, name) = path::split(text);
    match &expected_split {
        Some((p, n)) => assert_eq!((prefix, name), (p.as_str(), n.as_str()), "split({text:?})"),
        None => assert_eq!((prefix, name), (text, ""), "split({text:?})"),
    }
    assert_eq!(
        path::split_last(text),
        text.rsplit_once('/').unwrap_or(("", text)),
        "split_last({text:?})"
    );

    let expected = ref_validate_path(text);
    assert_eq!(path::validate(text), expected, "validate path {text:?}");
    assert_eq!(StreamPath::validate(text), expected);
    let partial = ref_validate_partial(text);
    assert_eq!(
        path::validate_partial(text),
        partial,
        "validate_partial({text:?})"
    );
    assert_eq!(StreamPath::validate_partial(text), partial);
    // A full path is a partial path.
    assert!(expected.is_err() || partial.is_ok(), "{text:?}");
    let parsed = text.parse::<StreamPath>();
    assert_eq!(parsed.is_ok(), expected.is_ok(), "parse path {text:?}");
    let Ok(path) = parsed else { return };

    assert_eq!(path.as_str(), text);
    assert_eq!(path.split(), (prefix, name));
    assert_eq!((path.prefix(), path.name()), (prefix, name));
    assert_eq!(path.split_last(), path::split_last(text));
    let (p, n) = path.to_parts();
    assert_eq!((p.as_str(), n.as_str()), (prefix, name));
    assert_eq!(p.join(&n), path);
    assert_eq!(StreamName::validate(p.as_str()), Ok(()));
    assert_eq!(StreamName::validate(n.as_str()), Ok(()));
}

fn check_project(text: &str) {
    let expected = ref_validate_project(text);
    assert_eq!(ProjectName::validate(text), expected, "project {text:?}");
    let parsed = text.parse::<ProjectName>();
    assert_eq!(parsed.is_ok(), expected.is_ok());
    if let Ok(project) = parsed {
        assert_eq!(project.as_str(), text);
    }
}

fn check_secret(data: &[u8]) {
    match PrefixSecret::from_bytes(data) {
        Ok(secret) => {
            assert_eq!(data.len(), PrefixSecret::LEN);
            assert!(secret.ct_eq_bytes(data));
        }
        Err(e) => {
            assert_ne!(data.len(), PrefixSecret::LEN);
            assert_eq!(
                e,
                Error::SecretLength {
                    found: data.len(),
                    required: PrefixSecret::LEN
                }
            );
        }
    }
}
