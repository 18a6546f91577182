//! Closed sets of names on the wire (kernel states, stream names, job kinds, ...): the macro
//! that declares each as an enum whose JSON form, text form and parser follow from one list,
//! and the error of a value outside its set.

/// A value that is not one of the names its set allows, with the names that are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?}: expected one of {}", .valid.join(", "))]
pub struct UnknownName {
    /// What the value names, in words: `job state`.
    pub what: &'static str,
    /// The value as it was given.
    pub value: String,
    /// Every name the set allows, in the order the set lists them.
    pub valid: &'static [&'static str],
}

/// Declares a fieldless enum whose variants each have one wire name. Serde's renames,
/// `as_str`, `Display` and `FromStr` all take the name from the one literal given per
/// variant, so the JSON form and the text form (query strings, metric labels, pages)
/// cannot drift apart.
macro_rules! closed_names {
    (
        $(#[$meta:meta])*
        pub enum $name:ident: $what:literal {
            $( $(#[$variant_meta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
        )]
        pub enum $name {
            $( $(#[$variant_meta])* #[serde(rename = $text)] $variant, )+
        }

        impl $name {
            /// Every value, in the order the wire format lists them.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// The wire name of every value, in the same order.
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            /// The value's name on the wire.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::names::UnknownName;

            fn from_str(text: &str) -> Result<$name, $crate::names::UnknownName> {
                match text {
                    $($text => Ok($name::$variant),)+
                    _ => Err($crate::names::UnknownName {
                        what: $what,
                        value: text.to_owned(),
                        valid: $name::NAMES,
                    }),
                }
            }
        }
    };
}

pub(crate) use closed_names;

/// Checks that every value of a closed set serializes to its name, reads back from it, and
/// parses from its text; a test helper for the modules that declare sets.
#[cfg(test)]
pub(crate) fn assert_round_trips<T>(all: &[T], names: &[&str])
where
    T: Copy
        + PartialEq
        + std::fmt::Debug
        + std::fmt::Display
        + std::str::FromStr<Err = UnknownName>
        + serde::Serialize
        + serde::de::DeserializeOwned,
{
    assert_eq!(all.len(), names.len());
    for (value, name) in all.iter().zip(names) {
        let json = serde_json::to_string(value).unwrap();
        assert_eq!(json, format!("\"{name}\""), "{value:?}");
        assert_eq!(serde_json::from_str::<T>(&json).unwrap(), *value);
        assert_eq!(value.to_string(), *name);
        assert_eq!(name.parse::<T>(), Ok(*value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    closed_names! {
        /// A set for testing the macro alone.
        pub enum Fruit: "fruit" {
            Apple = "apple",
            BloodOrange = "blood_orange",
        }
    }

    #[test]
    fn names_come_from_one_list() {
        assert_round_trips(Fruit::ALL, &["apple", "blood_orange"]);
        assert_eq!(Fruit::BloodOrange.as_str(), "blood_orange");
    }

    #[test]
    fn an_unknown_name_is_reported_with_the_valid_ones() {
        let error = "Apple".parse::<Fruit>().unwrap_err();
        assert_eq!(
            error,
            UnknownName {
                what: "fruit",
                value: "Apple".into(),
                valid: &["apple", "blood_orange"],
            }
        );
        assert_eq!(
            error.to_string(),
            "unknown fruit \"Apple\": expected one of apple, blood_orange"
        );
        assert!(serde_json::from_str::<Fruit>("\"pear\"").is_err());
    }
}
