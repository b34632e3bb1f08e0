//! Property tests for the name and path parsers: generated valid names validate,
//! split and join round-trip, and breaking any rule is rejected.

use coordinator_types::{Error, PathPart, ProjectName, StreamName, StreamPath, path};
use proptest::prelude::*;

/// A valid segment: a letter or digit, then any allowed characters.
fn segment() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9._:-]{0,12}"
}

/// A valid stream name of 1..6 segments.
fn name() -> impl Strategy<Value = String> {
    prop::collection::vec(segment(), 1..6).prop_map(|s| s.join("/"))
}

/// A character that is never allowed in a name.
fn illegal_char() -> impl Strategy<Value = char> {
    prop_oneof![
        prop::sample::select(vec![
            '^', ' ', '+', '*', '\\', '#', '%', '?', '!', '\0', '\n'
        ]),
        prop::char::range('\u{80}', '\u{10FFFF}'),
    ]
}

/// Reference: the stream name rules of `docs/behaviour.md` §2, written as plainly
/// as possible.
fn reference_valid(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 4096
        && s.split('/').all(|seg| {
            let mut chars = seg.chars();
            matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
                && chars.all(|c| c.is_ascii_alphanumeric() || "._-:".contains(c))
        })
}

proptest! {
    #[test]
    fn generated_names_validate(n in name()) {
        prop_assert_eq!(StreamName::validate(&n), Ok(()));
        let parsed: StreamName = n.parse().unwrap();
        prop_assert_eq!(parsed.as_str(), n.as_str());
        prop_assert_eq!(parsed.segments().collect::<Vec<_>>().join("/"), n.clone());
        prop_assert_eq!(parsed.segment_count(), n.split('/').count());
    }

    #[test]
    fn split_then_join_is_identity(n in name()) {
        let parsed: StreamName = n.parse().unwrap();
        let (prefix, last) = parsed.split();
        let rejoined = if prefix.is_empty() { last.to_owned() } else { format!("{prefix}/{last}") };
        prop_assert_eq!(rejoined, n);
    }

    #[test]
    fn path_join_split_round_trip(p in name(), n in name()) {
        let prefix: StreamName = p.parse().unwrap();
        let nm: StreamName = n.parse().unwrap();
        let joined = prefix.join(&nm);
        prop_assert_eq!(joined.split(), (p.as_str(), n.as_str()));
        prop_assert_eq!(path::split(joined.as_str()), (p.as_str(), n.as_str()));
        let reparsed: StreamPath = joined.as_str().parse().unwrap();
        prop_assert_eq!(&reparsed, &joined);
        let (pp, nn) = reparsed.to_parts();
        prop_assert_eq!((pp, nn), (prefix, nm));
    }

    #[test]
    fn illegal_character_is_rejected_where_it_is(n in name(), c in illegal_char(), at in any::<prop::sample::Index>()) {
        // Insert after the first character so the segment start stays legal.
        let boundaries: Vec<usize> = (1..=n.len()).filter(|&i| n.is_char_boundary(i)).collect();
        let i = boundaries[at.index(boundaries.len())];
        let mut bad = n.clone();
        bad.insert(i, c);
        prop_assume!(bad.len() <= StreamName::MAX_LENGTH);
        let err = StreamName::validate(&bad).unwrap_err();
        let ok_index = matches!(err, Error::IllegalCharacter { index, .. } if index == i)
            || matches!(err, Error::InvalidSegmentStart { offset, .. } if offset == i);
        prop_assert!(ok_index, "{:?} for {:?}", err, bad);
        prop_assert!(!reference_valid(&bad));
    }

    #[test]
    fn bad_segment_start_is_rejected(n in name(), c in prop::sample::select(vec!['.', '_', '-', ':']), seg in any::<prop::sample::Index>()) {
        let segments: Vec<&str> = n.split('/').collect();
        let k = seg.index(segments.len());
        let offset: usize = segments[..k].iter().map(|s| s.len() + 1).sum();
        let mut bad = n.clone();
        bad.insert(offset, c);
        prop_assert_eq!(
            StreamName::validate(&bad),
            Err(Error::InvalidSegmentStart { offset, found: coordinator_types::Found::Char(c) })
        );
    }

    #[test]
    fn empty_segments_and_trailing_separator_are_rejected(n in name()) {
        prop_assert_eq!(StreamName::validate(&format!("{n}/")), Err(Error::TrailingSeparator));
        let leading = matches!(StreamName::validate(&format!("/{n}")), Err(Error::InvalidSegmentStart { offset: 0, .. }));
        prop_assert!(leading);
        let doubled = n.replacen('/', "//", 1);
        prop_assert_eq!(StreamName::validate(&doubled).is_ok(), !n.contains('/'));
    }

    #[test]
    fn validation_agrees_with_reference(s in "[A-Za-z0-9/._:+^-]{0,24}") {
        prop_assert_eq!(StreamName::validate(&s).is_ok(), reference_valid(&s));
        let (p, n) = path::split(&s);
        let full = !p.is_empty() && p.len() < s.len() && reference_valid(p) && reference_valid(n);
        prop_assert_eq!(path::validate(&s).is_ok(), full, "{:?}", s);
        let partial = (p.is_empty() || reference_valid(p)) && (n.is_empty() || reference_valid(n));
        prop_assert_eq!(path::validate_partial(&s).is_ok(), partial, "{:?}", s);
    }

    #[test]
    fn path_part_errors_name_the_part(p in name(), n in name()) {
        let bad_name = format!("{p}/+/_{n}");
        let is_name = matches!(path::validate(&bad_name), Err(Error::InvalidPathPart { part: PathPart::Name, .. }));
        prop_assert!(is_name);
        let bad_prefix = format!("_{p}/+/{n}");
        let is_prefix = matches!(path::validate(&bad_prefix), Err(Error::InvalidPathPart { part: PathPart::Prefix, .. }));
        prop_assert!(is_prefix);
    }

    #[test]
    fn project_names(s in "[a-z][a-z0-9_-]{0,20}", bad in "[A-Z/.+ ]") {
        prop_assert!(s.parse::<ProjectName>().is_ok());
        let broken = format!("{s}{bad}");
        let at_end = matches!(ProjectName::validate(&broken), Err(Error::ProjectCharacter { index, .. }) if index == s.len());
        prop_assert!(at_end);
    }
}
