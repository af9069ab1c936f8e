package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluice-media/sluice/sfu/api"
	"github.com/sluice-media/sluice/sfu/auth"
)

func newTokenCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create access tokens",
	}
	var req api.TokenRequest
	create := &cobra.Command{
		Use:   "create",
		Short: "Create an access token for a room",
		Long: `Create an access token (an HS256 JWT) granting publish, subscribe or admin rights.

With --api-key and --api-secret the token is signed locally and no daemon is needed; otherwise the
daemon mints it (POST /v1/tokens).`,
		Example: `  sluice token create --room lobby --identity alice --publish --ttl 2h
  sluice token create --room lobby --subscribe --api-key app --api-secret "$SECRET"
  sluice token create --admin --ttl 24h -o json
  sluice token create --livekit --room lobby --identity alice --publish --subscribe`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out api.TokenResponse
			if g.apiKey != "" || g.apiSecret != "" {
				if g.apiKey == "" || g.apiSecret == "" {
					return fmt.Errorf("--api-key and --api-secret go together")
				}
				claims, err := api.BuildClaims(req, time.Now())
				if err != nil {
					return err
				}
				out.Token, err = auth.Sign(g.apiKey, g.apiSecret, claims)
				if err != nil {
					return err
				}
				out.ExpiresAt = time.Unix(claims.ExpiresAt, 0).UTC()
			} else if err := g.client().do(cmd.Context(), "POST", "/v1/tokens", req, &out); err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(cmd.OutOrStdout(), out)
			}
			fmt.Fprintln(cmd.OutOrStdout(), out.Token)
			return nil
		},
	}
	f := create.Flags()
	f.StringVar(&req.Room, "room", "", "room the token is for (required unless --admin)")
	f.StringVar(&req.Identity, "identity", "", "participant identity")
	f.StringVar(&req.Name, "name", "", "participant display name")
	f.BoolVar(&req.Publish, "publish", false, "allow publishing")
	f.BoolVar(&req.Subscribe, "subscribe", false, "allow playing")
	f.BoolVar(&req.Admin, "admin", false, "allow the API and every room")
	f.StringVar(&req.TTL, "ttl", "1h", "lifetime of the token")
	f.BoolVar(&req.LiveKit, "livekit", false, "add LiveKit's video grant, for LiveKit client SDKs joining over /rtc (needs --room and --identity)")
	f.StringVar(&req.Metadata, "metadata", "", "participant metadata (LiveKit tokens)")
	cmd.AddCommand(create)
	return cmd
}
