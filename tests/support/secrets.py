"""One planted secret of each kind the safety pass must scrub, shared by its unit and broker tests.

The secrets are split into pieces so the source holds no scannable secret itself.
"""

from __future__ import annotations

J = "".join

#: placeholder type -> (the secret value, a line of code that holds it)
PLANTED: dict[str, tuple[str, str]] = {
    "aws_access_key": (J(["AKIA", "QX7Z2M4K9R3T5W8Y"]), 'aws_key_id = "{}"'),
    "gcp_api_key": (J(["AIza", "SyD9tSrke72PouQMnMXa7eZSW0jkFMBWZqQ"]), "const maps = '{}';"),
    "github_token": (J(["ghp", "_", "k3J9x2LmQ7pR4tW6yB8nC5hV1sD0fG2aZ9eX"]), "GH = {}"),
    "slack_token": (J(["xo", "xb-", "482910374651-9283746501928-Qw3rTy7uIo9pAs2dFg4hJk6l"]), "hook({})"),
    "stripe_key": (J(["sk", "_live_", "51HxQ2eR8tY6uI4oP9aS3dF7"]), "stripe.api_key = '{}'"),
    "private_key": (
        J(["-----BEGIN ", "RSA PRIVATE KEY-----\n", "MIIEowIBAAKCAQEA7bq98mHcLtJ1R2dYx0nqWz4Q\n",
            "Q3aZ9pLk2mNbVc8xXyZ1aB2cD3eF4gH5iJ6kL7mN\n", "-----END ", "RSA PRIVATE KEY-----"]),
        'KEY = """{}"""',
    ),
    "password_in_url": (J(["Tr0ub4dor", "x9Zq"]), 'DB = "postgres://admin:{}@db.internal:5432/app"'),
    "jwt": (
        J(["eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9", ".", "eyJzdWIiOiI0MjQyIiwibmFtZSI6ImFsaWNlIn0", ".",
           "Xq3vB8nR2kL9pW5tY7uI1oA4sD6fG0hJ2kL4zX8cV"]),
        "Authorization: Bearer {}",
    ),
    "high_entropy_string": (J(["9fK2xQ7vL1mZ8pR4", "tW6yB3nC5hJ0sDe"]), 'client_token = "{}"'),
    "password": (J(["hunter2", "Correct-Horse"]), 'password = "{}"'),
}
