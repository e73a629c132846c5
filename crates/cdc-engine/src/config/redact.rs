//! Hiding the password of a PostgreSQL connection URL before it is printed.

/// What replaces a password.
const MASK: &str = "***";

/// `url` with the password of its user-info part and the value of any
/// `password` query parameter replaced by `***`:
/// `postgres://app:secret@db/app?sslmode=require` becomes
/// `postgres://app:***@db/app?sslmode=require`.
pub(crate) fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let mut out = String::with_capacity(url.len());
    out.push_str(scheme);
    // The user info ends at the last `@`: passwords are often written with
    // unescaped `/`, `?` or `@`, and masking too much beats leaking.
    let after_user_info = match rest.rfind('@') {
        Some(at) => {
            let user_info = &rest[..at];
            match user_info.split_once(':') {
                Some((user, _password)) => {
                    out.push_str(user);
                    out.push(':');
                    out.push_str(MASK);
                }
                None => out.push_str(user_info),
            }
            out.push('@');
            &rest[at + 1..]
        }
        None => rest,
    };
    match after_user_info.split_once('?') {
        Some((host_and_path, query)) => {
            out.push_str(host_and_path);
            out.push('?');
            let (query, fragment) = match query.split_once('#') {
                Some((query, fragment)) => (query, Some(fragment)),
                None => (query, None),
            };
            for (i, pair) in query.split('&').enumerate() {
                if i > 0 {
                    out.push('&');
                }
                match pair.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => {
                        out.push_str(key);
                        out.push('=');
                        out.push_str(MASK);
                    }
                    _ => out.push_str(pair),
                }
            }
            if let Some(fragment) = fragment {
                out.push('#');
                out.push_str(fragment);
            }
        }
        None => out.push_str(after_user_info),
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::redact_url;

    #[test]
    fn masks_user_info_password() {
        assert_eq!(
            redact_url("postgres://app:s3cr:et@db:5432/app?sslmode=require"),
            "postgres://app:***@db:5432/app?sslmode=require"
        );
        assert_eq!(
            redact_url("postgresql://u:p@s/s?#@host/db"),
            "postgresql://u:***@host/db"
        );
    }

    #[test]
    fn masks_password_query_parameter() {
        assert_eq!(
            redact_url("postgres://db/app?user=u&password=secret&x=1"),
            "postgres://db/app?user=u&password=***&x=1"
        );
    }

    #[test]
    fn leaves_urls_without_password_alone() {
        for url in [
            "postgres://app@db/app",
            "postgres://db",
            "postgres:///app?host=/tmp",
            "",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }
}
