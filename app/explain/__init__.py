"""`podgraft explain`, decided (pure):

- `webhooks`: which mutating webhooks the apiserver calls for a Pod CREATE, in its order;
- `report`: the namespace, each policy's decision and state, the webhooks, as text or JSON.
"""
