"""The admission step: from an AdmissionReview body to an AdmissionResponse, around the pure engine.

- `review`: parse and check the request (`parse_review`), or raise `BadReview`;
- `decide`: route one request to the engine and build the `Verdict`;
- `responses`: the named response constructors (typed `AdmissionResponse`);
- `cache`: the decision cache for identical replica pods.

Two error channels (as in kopf and controller-runtime):
- the *webhook request* is bad (not JSON, not an AdmissionReview, no uid): `BadReview`, which the
  HTTP layer answers with a 4xx whose body is an AdmissionReview-shaped error;
- the *operation under review* is refused (a required policy cannot be honoured, a disallowed
  debug image): `allowed: false` with a status message, in a normal 200 AdmissionReview.
"""
