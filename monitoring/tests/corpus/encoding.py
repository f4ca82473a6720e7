# Base64 and compression of data (not of code), hashing, pickling to memory.
import base64
import gzip
import hashlib
import hmac
import pickle
import zlib

data = b"some payload " * 10
encoded = base64.b64encode(data).decode()
assert base64.b64decode(encoded) == data
print(len(zlib.compress(data)), len(gzip.compress(data)))
print(hashlib.sha256(data).hexdigest()[:16])
print(hmac.new(b"key", data, "sha256").hexdigest()[:16])
print(pickle.loads(pickle.dumps({"a": [1, 2, 3]})))
config = eval("{'retries': 3}")  # an agent's shortcut, not decoded code
print(config)
