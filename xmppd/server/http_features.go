package server

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"xedge/xmppd/mod/extdisco"
	"xedge/xmppd/mod/upload"
	"xedge/xmppd/websocket"
)

// The features served on the node's HTTP listener besides metrics and the web
// admin page (docs/http.md): HTTP file upload (XEP-0363, upload-dir), XMPP over
// WebSocket (RFC 7395, /xmpp-websocket) and XEP-0156 host-meta; and, with or
// without the listener, external service discovery (XEP-0215, ext-services).

func init() { registerFeature(Feature{Name: "http features", Build: buildHTTPFeatures}) }

func buildHTTPFeatures(s *Server) ([]StagedComponent, error) {
	hs := s.HTTP()
	uc := s.cfg.Upload
	if s.cfg.Witness {
		return nil, nil
	}
	var comps []StagedComponent
	if uc.ExtServices != "" {
		svcs, err := extdisco.Parse(uc.ExtServices)
		if err != nil {
			return nil, fmt.Errorf("ext-services: %w", err)
		}
		m := extdisco.New(svcs, uc.ExtSecret, uc.ExtTTL)
		comps = append(comps, StagedComponent{Stage: AfterModules, Name: "external services (XEP-0215)",
			Start: func(ctx context.Context) error { return m.Start(ctx, s.Router) }, Stop: m.Stop})
	}
	if hs == nil {
		return comps, nil
	}
	baseURL := func() string {
		if uc.URL != "" {
			return uc.URL
		}
		return hs.URL()
	}
	if uc.WebSocket {
		lim := int64(s.cfg.MaxStanza) + 4096
		if err := hs.Handle(websocket.Path, websocket.Handler(websocket.Options{
			Serve: s.C2S.ServeConn, TLS: hs.TLS(), MaxMessage: lim, Origins: uc.OriginList(), Logger: s.log,
		})); err != nil {
			return nil, err
		}
		hm := websocket.HostMeta(func(r *http.Request) string {
			if uc.URL != "" {
				return websocket.URL(uc.URL)
			}
			scheme := "http://"
			if hs.TLS() {
				scheme = "https://"
			}
			return websocket.URL(scheme + r.Host)
		})
		for _, p := range []string{"/.well-known/host-meta", "/.well-known/host-meta.json"} {
			if err := hs.Handle(p, hm); err != nil {
				return nil, err
			}
		}
	}
	if uc.Dir != "" {
		key, err := s.uploadKey()
		if err != nil {
			return nil, fmt.Errorf("upload: %w", err)
		}
		svcJID := uc.Domain
		if svcJID == "" {
			svcJID = "upload." + s.cfg.Domain
		}
		// Virtual hosts: each other host gets its own service (upload.HOST, or
		// its host_config upload_domain) for its own users.
		more := map[string]string{}
		for _, d := range s.cfg.HostNames() {
			if hc, ok := s.cfg.Host(d); ok && d != s.cfg.Domain && hc.UploadDomain != "" {
				more[hc.UploadDomain] = d
			}
		}
		svc := upload.New(upload.Config{Domain: s.cfg.Domain, Service: svcJID, Services: more, Dir: uc.Dir, MaxSize: uc.MaxSize,
			Quota: uc.Quota, Expire: uc.Expire, BaseURL: baseURL, Key: key, Logger: s.log})
		if err := hs.Handle(upload.Path, svc); err != nil {
			return nil, err
		}
		comps = append(comps, StagedComponent{Stage: AfterModules, Name: "upload " + strings.Join(svc.Services(), ","),
			Start: func(ctx context.Context) error { return svc.Start(ctx, s.Router) }, Stop: svc.Stop})
	}
	return comps, nil
}

// uploadKey is the HMAC key of upload slots: derived from the cluster key, so
// every node verifies every node's slots, or else a random key kept in the
// data directory.
func (s *Server) uploadKey() ([]byte, error) {
	if s.cfg.Clustered() {
		ck, err := s.cfg.LoadClusterKey()
		if err != nil {
			return nil, err
		}
		m := hmac.New(sha256.New, ck)
		m.Write([]byte("xedge http upload slots"))
		return m.Sum(nil), nil
	}
	p := filepath.Join(s.cfg.Data, "upload.key")
	if b, err := os.ReadFile(p); err == nil && len(b) >= 32 {
		return b, nil
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	b := make([]byte, 32)
	rand.Read(b)
	if err := os.MkdirAll(s.cfg.Data, 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(p, b, 0o600); err != nil {
		return nil, err
	}
	return b, nil
}
