//! Tag filters for reads.

use weir_proto::batch::tag_hash;

/// Which tags a read returns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TagFilter {
    /// Every message.
    #[default]
    All,
    /// Messages whose tag is one of these (tag, [`tag_hash`] of it).
    Tags(Vec<(String, u64)>),
}

impl TagFilter {
    /// Parses a RocketMQ-style expression: `"TagA || TagB"`; `"*"` or `""` means all.
    pub fn parse(expr: &str) -> TagFilter {
        let tags: Vec<(String, u64)> = expr
            .split("||")
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| (t.to_owned(), tag_hash(t)))
            .collect();
        if tags.is_empty() || tags.iter().any(|(t, _)| t == "*") {
            TagFilter::All
        } else {
            TagFilter::Tags(tags)
        }
    }

    /// Whether a consume-queue entry with this tag hash may match (hashes collide: confirm
    /// with [`TagFilter::matches_tag`]).
    pub fn matches_hash(&self, hash: u64) -> bool {
        match self {
            TagFilter::All => true,
            TagFilter::Tags(tags) => tags.iter().any(|(_, h)| *h == hash),
        }
    }

    /// Whether a record with this tag matches.
    pub fn matches_tag(&self, tag: &str) -> bool {
        match self {
            TagFilter::All => true,
            TagFilter::Tags(tags) => tags.iter().any(|(t, _)| t == tag),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_expressions() {
        assert_eq!(TagFilter::parse(""), TagFilter::All);
        assert_eq!(TagFilter::parse(" * "), TagFilter::All);
        let f = TagFilter::parse("TagA || TagB");
        assert!(f.matches_hash(tag_hash("TagA")) && f.matches_tag("TagB"));
        assert!(!f.matches_hash(tag_hash("TagC")) && !f.matches_tag("TagC"));
        assert!(!f.matches_hash(0));
    }
}
