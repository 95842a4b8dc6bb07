//! Enums whose variants users name: on the command line, in JSON reports and in lineage
//! records. Each such enum lists its variants once, with name, aliases and help text, and
//! everything else (parsing, display, serialisation, the CLI's possible values) derives from
//! that list, so a name cannot be spelled two ways in two places.

/// One variant of a [`Named`] enum.
pub struct Variant<T: 'static> {
    pub value: T,
    /// The canonical name (`dare_linear`, `sv_fro`, `peft`).
    pub name: &'static str,
    /// Other spellings accepted on input (`dare-linear`).
    pub aliases: &'static [&'static str],
    /// One line for `--help`.
    pub help: &'static str,
}

/// An enum with user-facing names. Implement it with [`named_enum!`](crate::named_enum).
pub trait Named: Copy + PartialEq + 'static {
    /// What the values are called in messages ("format", "merge method").
    const WHAT: &'static str;
    const VARIANTS: &'static [Variant<Self>];

    fn name(self) -> &'static str {
        Self::VARIANTS
            .iter()
            .find(|v| v.value == self)
            .map_or("?", |v| v.name)
    }

    /// Parse a name or alias, ignoring ASCII case.
    fn parse_name(s: &str) -> Option<Self> {
        Self::VARIANTS
            .iter()
            .find(|v| {
                v.name.eq_ignore_ascii_case(s)
                    || v.aliases.iter().any(|a| a.eq_ignore_ascii_case(s))
            })
            .map(|v| v.value)
    }

    /// Every canonical name, for messages.
    fn names() -> Vec<&'static str> {
        Self::VARIANTS.iter().map(|v| v.name).collect()
    }

    /// The canonical names as a sentence: `peft, diffusers, kohya or gguf`.
    fn names_sentence() -> String {
        match Self::names().split_last() {
            Some((last, [])) => last.to_string(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        }
    }

    /// [`Named::parse_name`] with an error that lists what is accepted.
    fn parse_or_explain(s: &str) -> Result<Self, String> {
        Self::parse_name(s).ok_or_else(|| {
            format!(
                "unknown {} '{s}' (expected {})",
                Self::WHAT,
                Self::names_sentence()
            )
        })
    }
}

/// Implement [`Named`], `Display`, `FromStr` and `serde::Serialize` (as the name) for an enum:
///
/// ```ignore
/// named_enum!(Format, "format", [
///     Peft => "peft", [], "PEFT adapter directory",
///     Kohya => "kohya", ["sd-scripts"], "kohya sd-scripts file",
/// ]);
/// ```
#[macro_export]
macro_rules! named_enum {
    ($ty:ty, $what:expr, [$($variant:ident => $name:expr, [$($alias:expr),*], $help:expr),+ $(,)?]) => {
        impl $crate::named::Named for $ty {
            const WHAT: &'static str = $what;
            const VARIANTS: &'static [$crate::named::Variant<Self>] = &[
                $($crate::named::Variant {
                    value: <$ty>::$variant,
                    name: $name,
                    aliases: &[$($alias),*],
                    help: $help,
                }),+
            ];
        }
        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str($crate::named::Named::name(*self))
            }
        }
        impl ::std::str::FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> ::std::result::Result<Self, String> {
                <$ty as $crate::named::Named>::parse_or_explain(s)
            }
        }
        impl ::serde::Serialize for $ty {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> ::std::result::Result<S::Ok, S::Error> {
                s.serialize_str($crate::named::Named::name(*self))
            }
        }
        impl<'de> ::serde::Deserialize<'de> for $ty {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> ::std::result::Result<Self, D::Error> {
                let s = <::std::borrow::Cow<'de, str> as ::serde::Deserialize>::deserialize(d)?;
                <$ty as $crate::named::Named>::parse_or_explain(&s).map_err(::serde::de::Error::custom)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Colour {
        Red,
        DarkBlue,
    }
    crate::named_enum!(Colour, "colour", [
        Red => "red", [], "warm",
        DarkBlue => "dark_blue", ["dark-blue"], "cold",
    ]);

    #[test]
    fn names_aliases_and_case_parse_to_one_variant() {
        assert_eq!("RED".parse::<Colour>(), Ok(Colour::Red));
        assert_eq!("dark-blue".parse::<Colour>(), Ok(Colour::DarkBlue));
        assert_eq!(Colour::DarkBlue.to_string(), "dark_blue");
        assert_eq!(
            serde_json::to_string(&Colour::DarkBlue).ok().as_deref(),
            Some("\"dark_blue\"")
        );
        assert_eq!(
            serde_json::from_str::<Colour>("\"dark-blue\"").ok(),
            Some(Colour::DarkBlue)
        );
        let err = "green".parse::<Colour>().unwrap_err();
        assert_eq!(err, "unknown colour 'green' (expected red or dark_blue)");
    }
}
