use proptest::prelude::*;

use super::*;

fn norm(path: &str) -> Result<String, PathError> {
    normalize(path, PathPolicy::default()).map(Cow::into_owned)
}

#[test]
fn the_bypasses_of_issue_8_reach_one_form() {
    for spelled in [
        "/admin",
        "/%61dmin",
        "/%61%64%6D%69%6E",
        "//admin",
        "/x/../admin",
        "/./admin",
        "/%2e%2e/admin",
        "/x/%2E%2E/admin",
        "///x//..//admin",
    ] {
        assert_eq!(norm(spelled).as_deref(), Ok("/admin"), "{spelled}");
    }
}

#[test]
fn normal_paths_are_borrowed() {
    for path in ["/", "/api/v1/users", "/a/b/", "/.well-known/x", "/caf%C3%A9", "/a%20b"] {
        assert!(
            matches!(normalize(path, PathPolicy::default()), Ok(Cow::Borrowed(_))),
            "{path}"
        );
    }
}

#[test]
fn reserved_encodings_stay_encoded_in_upper_case() {
    assert_eq!(norm("/a%3fb").as_deref(), Ok("/a%3Fb"));
    assert_eq!(norm("/caf%c3%a9").as_deref(), Ok("/caf%C3%A9"));
}

#[test]
fn dot_segments_never_climb_above_the_root() {
    assert_eq!(norm("/../../etc/passwd").as_deref(), Ok("/etc/passwd"));
    assert_eq!(norm("/a/b/..").as_deref(), Ok("/a/"));
    assert_eq!(norm("/a/.").as_deref(), Ok("/a/"));
    assert_eq!(norm("/..").as_deref(), Ok("/"));
}

#[test]
fn refusals() {
    assert_eq!(norm("/a%2Fb"), Err(PathError::EncodedSlash));
    assert_eq!(norm("/a%2fb"), Err(PathError::EncodedSlash));
    assert_eq!(norm("/a%5Cb"), Err(PathError::EncodedSlash));
    assert_eq!(norm("/a\\b"), Err(PathError::Backslash));
    assert_eq!(norm("/a%00b"), Err(PathError::Control));
    assert_eq!(norm("/a%0Ab"), Err(PathError::Control));
    assert_eq!(norm("/a%zz"), Err(PathError::BadEncoding));
    assert_eq!(norm("/a%4"), Err(PathError::BadEncoding));
    assert_eq!(norm("a/b"), Err(PathError::NotAbsolute));
    assert_eq!(norm(""), Err(PathError::NotAbsolute));
}

#[test]
fn policy_switches() {
    let keep = PathPolicy {
        merge_slashes: false,
        reject_encoded_slashes: false,
    };
    assert_eq!(normalize("//a//b", keep).as_deref(), Ok("//a//b"));
    assert_eq!(normalize("/a%2fb/%2e", keep).as_deref(), Ok("/a%2Fb/"));
}

/// Paths built from the characters that matter: separators, dots, escapes of every kind.
fn hostile_path() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/".to_owned()),
        Just(".".to_owned()),
        Just("..".to_owned()),
        Just("%2e".to_owned()),
        Just("%2E".to_owned()),
        Just("%2f".to_owned()),
        Just("%5c".to_owned()),
        Just("%".to_owned()),
        Just("\\".to_owned()),
        "[a-z]{1,3}",
        "%[0-9a-fA-F]{2}",
    ];
    prop::collection::vec(piece, 0..12).prop_map(|pieces| format!("/{}", pieces.concat()))
}

fn policies() -> impl Strategy<Value = PathPolicy> {
    (any::<bool>(), any::<bool>()).prop_map(|(merge_slashes, reject_encoded_slashes)| PathPolicy {
        merge_slashes,
        reject_encoded_slashes,
    })
}

proptest! {
    /// A normal path is a fixed point, has no dot segment, no encoded unreserved byte,
    /// and (when merging) no empty segment: nothing is left for an upstream to resolve
    /// differently.
    #[test]
    fn normal_form_is_final(path in hostile_path(), policy in policies()) {
        if let Ok(normal) = normalize(&path, policy) {
            let again = normalize(&normal, policy).expect("a normal path stays acceptable");
            prop_assert_eq!(&*again, &*normal);
            prop_assert!(normal.starts_with('/'));
            prop_assert!(!normal.split('/').any(|s| s == "." || s == ".."), "{}", normal);
            prop_assert!(!normal.to_ascii_lowercase().contains("%2e"), "{}", normal);
            if policy.merge_slashes {
                prop_assert!(!normal.contains("//"), "{}", normal);
            }
            if policy.reject_encoded_slashes {
                let lower = normal.to_ascii_lowercase();
                prop_assert!(!lower.contains("%2f") && !lower.contains("%5c"));
            }
        }
    }

    /// What the proxy routes on is what an upstream that decodes unreserved escapes and
    /// resolves dot segments would serve: decoding the normal form changes nothing more.
    #[test]
    fn no_second_reading(path in hostile_path()) {
        if let Ok(normal) = normalize(&path, PathPolicy::default()) {
            let decoded = decode_unreserved(normal.as_bytes(), PathPolicy::default()).expect("valid");
            prop_assert_eq!(remove_dot_segments(&merge_slashes(&decoded)), normal.as_bytes().to_vec());
        }
    }

    /// Any input at all: an answer, never a panic.
    #[test]
    fn never_panics(path in "\\PC{0,64}", policy in policies()) {
        let _ = normalize(&path, policy);
    }
}
