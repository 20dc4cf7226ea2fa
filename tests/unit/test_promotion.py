import pytest

from components.promotion import PromotionPolicy, decide_promotion

AUC = PromotionPolicy(metric="roc_auc", min_score=0.7)
LOSS = PromotionPolicy(metric="log_loss", min_score=0.5)


@pytest.mark.parametrize(
    ("candidate", "champion", "policy", "promote", "fragment"),
    [
        (0.80, None, AUC, True, "no champion yet"),
        (0.65, None, AUC, False, "below the threshold"),
        (0.80, 0.79, AUC, True, "beats"),
        (0.80, 0.80, AUC, False, "does not beat"),  # a tie keeps the champion
        (0.78, 0.80, AUC, False, "does not beat"),
        (0.65, 0.50, AUC, False, "below the threshold"),  # better than a bad champion is not enough
        (None, 0.8, AUC, False, "could not be computed"),
        (0.30, 0.35, LOSS, True, "beats"),  # lower log loss is better
        (0.60, None, LOSS, False, "above the threshold"),
    ],
)
def test_decide_promotion(candidate, champion, policy, promote, fragment) -> None:
    decision = decide_promotion(candidate, champion, policy)
    assert decision.promote is promote
    assert fragment in decision.reason
    assert decision.as_dict()["candidate_score"] == candidate
