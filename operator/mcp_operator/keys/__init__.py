"""JWT signing keys: generation and JWKS (``keygen``), the pure rotation schedule
(``schedule``), the Secret/ConfigMap codec (``store``), token minting (``tokens``) and the
I/O loop beside each worker (``controller``)."""
