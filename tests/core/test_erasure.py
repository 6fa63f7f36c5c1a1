"""Who an erasure covers, and the tombstones it leaves."""

from server.core.erasure import erasure_subject, subject_digests

# (anonymous_id, user_id, email_hash): p1 on devices v1 and v2 with email e1; p2 on v2 (shared) and v3.
LINKS = [("v1", "p1", "e1"), ("v2", "p1", None), ("v2", "p2", None), ("v3", "p2", None), (None, "p3", "e3")]


def subject(user_id=None, anonymous_id=None, email=None):  # type: ignore[no-untyped-def]
    s = erasure_subject(user_id, anonymous_id, email, LINKS)
    return set(s.user_ids), set(s.anonymous_ids), set(s.email_hashes)


def test_a_user_brings_their_devices_and_emails_but_not_the_other_users_of_a_shared_device() -> None:
    assert subject("p1") == ({"p1"}, {"v1", "v2"}, {"e1"})
    assert subject("p2") == ({"p2"}, {"v2", "v3"}, set())


def test_an_anonymous_id_or_an_email_finds_the_users_linked_to_it() -> None:
    assert subject(anonymous_id="v1") == ({"p1"}, {"v1", "v2"}, {"e1"})
    assert subject(email="e3") == ({"p3"}, set(), {"e3"})
    assert subject(anonymous_id="v2") == ({"p1", "p2"}, {"v1", "v2", "v3"}, {"e1"})


def test_unknown_identifiers_are_still_covered() -> None:
    assert subject("nobody", "v9", "e9") == ({"nobody"}, {"v9"}, {"e9"})


def test_tombstones_are_per_kind_digests_of_present_identifiers() -> None:
    digests = subject_digests({"x"}, {"x"}, {"x"})
    assert len(digests) == 3 and "x" not in digests
    assert subject_digests({""}, (), ()) == set()
