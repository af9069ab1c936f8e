package auth

// VideoGrant is the `video` claim of a LiveKit access token. A token carrying it is accepted
// wherever a sluice token is: Verify maps it onto Grants (see grants).
type VideoGrant struct {
	RoomCreate        bool     `json:"roomCreate,omitempty"`
	RoomList          bool     `json:"roomList,omitempty"`
	RoomRecord        bool     `json:"roomRecord,omitempty"`
	RoomAdmin         bool     `json:"roomAdmin,omitempty"`
	RoomJoin          bool     `json:"roomJoin,omitempty"`
	Room              string   `json:"room,omitempty"`
	CanPublish        *bool    `json:"canPublish,omitempty"`
	CanSubscribe      *bool    `json:"canSubscribe,omitempty"`
	CanPublishData    *bool    `json:"canPublishData,omitempty"`
	CanPublishSources []string `json:"canPublishSources,omitempty"`
	Hidden            bool     `json:"hidden,omitempty"`
}

// Allowed reads one of the grant's optional permissions: LiveKit treats an absent one as
// granted.
func Allowed(b *bool) bool { return b == nil || *b }

// grants maps the video grant onto sluice's: roomJoin allows publish and subscribe as
// canPublish and canSubscribe say, in the grant's room; roomAdmin (or, without a room,
// roomCreate/roomList) is admin.
func (v *VideoGrant) grants() Grants {
	return Grants{
		Room:      v.Room,
		Publish:   v.RoomJoin && Allowed(v.CanPublish),
		Subscribe: v.RoomJoin && Allowed(v.CanSubscribe),
		Admin:     v.RoomAdmin || (v.Room == "" && (v.RoomCreate || v.RoomList)),
	}
}

// applyVideo merges a LiveKit video grant into the sluice grants.
func (c *Claims) applyVideo() {
	if c.Video == nil {
		return
	}
	g := c.Video.grants()
	if c.Grants.Room == "" {
		c.Grants.Room = g.Room
	}
	c.Grants.Publish = c.Grants.Publish || g.Publish
	c.Grants.Subscribe = c.Grants.Subscribe || g.Subscribe
	c.Grants.Admin = c.Grants.Admin || g.Admin
}
