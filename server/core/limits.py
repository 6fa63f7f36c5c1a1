"""The longest text each request field may carry, in characters: validation refuses a longer one by name, and the
database columns that keep a field are sized from the same number (a column may be wider, never narrower)."""

GAME_ID = 63  # games/{game}
RESOURCE_ID = 63  # games/{game}/postbackConfigs/{postback_config}
EVENT_ID = 128  # also each conversion's dedup id at the networks
PLAYER_ID = 128  # user_id, anonymous_id
ORDER_ID = 128
ITEM_ID = 128
USER_AGENT = 512
CLICK_ID = 512  # given, or taken from the landing URL's ttclid / rdt_cid parameter
URL = 2048
EMAIL = 254  # kept only as hashes
IP_ADDRESS = 45  # as sent, a zone id and all; kept in its canonical form, at most 39
DISPLAY_NAME = 200
ACCESS_TOKEN = 2048  # kept encrypted
PIXEL_ID = 64  # a TikTok pixel code; a Reddit pixel id is a2_ and up to 61 more
TEST_CODE = 128  # passed to the network, never kept
PAGE_TOKEN = 512  # page and resume tokens; those the service issues are under 100
API_KEY_LABEL = 200  # `keys create --label`

# Taken from a network's reply into the delivery log: cut to these rather than refused.
NETWORK_CODE = 32
NETWORK_REQUEST_ID = 128
