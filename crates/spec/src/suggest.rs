//! "Did you mean" suggestions for misspelled names, by edit distance (the `strsim` crate).

/// The candidate closest to `input`, if it is close enough to be a plausible typo: at most a third
/// of the input's length in edits (minimum 1, maximum 3). Comparison ignores ASCII case so
/// `Replicas` suggests `replicas`.
pub fn did_you_mean<'a>(
    input: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let lower = input.to_ascii_lowercase();
    let limit = (input.chars().count() / 3).clamp(1, 3);
    candidates
        .into_iter()
        .map(|c| {
            (
                strsim::damerau_levenshtein(&lower, &c.to_ascii_lowercase()),
                c,
            )
        })
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// `", did you mean `x`?"` or an empty string, to append to an error message.
pub(crate) fn hint<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    did_you_mean(input, candidates)
        .map(|c| format!(", did you mean `{c}`?"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names() {
        let fields = ["replicas", "restart", "resources", "image"];
        assert_eq!(did_you_mean("replica", fields), Some("replicas"));
        assert_eq!(did_you_mean("imgae", fields), Some("image"));
        assert_eq!(did_you_mean("Replicas", fields), Some("replicas"));
        assert_eq!(did_you_mean("resorces", fields), Some("resources"));
        assert_eq!(did_you_mean("zzzzzzz", fields), None);
        assert_eq!(did_you_mean("x", fields), None);
    }

    #[test]
    fn hint_text() {
        assert_eq!(hint("replica", ["replicas"]), ", did you mean `replicas`?");
        assert_eq!(hint("nothing", ["replicas"]), "");
    }
}
