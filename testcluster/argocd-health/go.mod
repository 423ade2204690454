// Builds argocd-health, which runs Argo CD health scripts with the Lua interpreter Argo CD embeds.
module statefulapp.io/testcluster/argocd-health

go 1.25.0

require (
	github.com/yuin/gopher-lua v1.1.1
	sigs.k8s.io/yaml v1.6.0
)

require go.yaml.in/yaml/v2 v2.4.2 // indirect
