"""How an erased player is remembered: salted-by-kind hashes of their identifiers, never the identifiers."""

import hashlib


def subject_digests(user_ids=(), anonymous_ids=(), email_hashes=()) -> set[str]:  # type: ignore[no-untyped-def]
    """One digest per identifier; the kind prefix keeps a user id from matching an equal anonymous id."""
    subjects = [f"user:{u}" for u in user_ids] + [f"anon:{a}" for a in anonymous_ids] + [f"email:{e}" for e in email_hashes]
    return {hashlib.sha256(s.encode()).hexdigest() for s in subjects if s.split(":", 1)[1]}
