from kallm.match.pair_text import ELIDED, FITS, MAX_CHARS, pair_input

REPORT = " ".join(f"Line {i} of the order history lists a delivered parcel." for i in range(30))


def test_short_pairs_are_read_whole():
    assert pair_input("Is 91 prime?", "is 91 prime") == ("Is 91 prime?", "is 91 prime")


def test_long_pairs_are_read_where_they_differ():
    cached = f"{REPORT} Can I return the blender I bought last week? {REPORT}"
    asked = f"{REPORT} Can I return the toaster I bought last week? {REPORT}"
    assert len((cached + asked).split()) > FITS
    pair = pair_input(cached, asked)
    assert pair is not None
    a, b = pair
    assert "blender" in a and "toaster" in b
    assert a.startswith(ELIDED) and a.endswith(ELIDED)
    assert len(a.split()) < 30 and len(b.split()) < 30


def test_a_difference_at_either_end_is_kept():
    pair = pair_input(f"{REPORT} Reply in French.", f"{REPORT} Reply in German.")
    assert pair is not None and pair[0].endswith("French.") and pair[1].endswith("German.")
    pair = pair_input(f"Summarise for a child. {REPORT}", f"Summarise for a lawyer. {REPORT}")
    assert pair is not None and pair[0].startswith("Summarise for a child.")


def test_pairs_past_the_size_limit_are_not_read():
    assert pair_input("a" * MAX_CHARS, "b") is None
