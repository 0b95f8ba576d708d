"""The drift canary's warning: what it flagged, said so that a session's opening canary reads right."""
from __future__ import annotations

from harness.coordinator import flagged_text


def test_a_canary_with_nothing_since_the_last_good_one_says_so_not_a_count_of_zero():
    """`hwl onboard`'s every batch opens with a canary against the last session's baseline: off by 5 %, it warned
    'flagged the results of 0 jobs since the last good canary (0 results, re-measured attempts included)'."""
    assert flagged_text(0, 0) == "no result since the last good canary to flag"
    assert flagged_text(1, 3) == ("flagged the results of 1 job since the last good canary (3 results, re-measured "
                                  "attempts included)")
    assert flagged_text(3, 7).startswith("flagged the results of 3 jobs since the last good canary (7 results,")
