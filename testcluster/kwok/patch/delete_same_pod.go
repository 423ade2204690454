// Added to kwok's controllers package at build time (see build.sh): the
// deletion of a pod whose graceful deletion is due, bound to that pod's
// UID. kwok deletes by name only, so a late or repeated deletion removed a
// pod made again under the same name in the meantime (a StatefulSet's
// pod, an instance's pod after a restart).

package controllers

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// deleteSamePod deletes `pod` at once, and no other pod of its name: a pod
// already gone, or replaced by a new one of the same name, is done. So is a
// pod whose deletion had no grace period: the API server removed it when
// asked (or waits for its finalizers, which no deletion hastens). kwok
// deleted those again, once per update it saw, as a kubelet does not: at
// hundreds of pods removed at once, those failing requests were a good
// part of the API server's work.
func deleteSamePod(ctx context.Context, client kubernetes.Interface, pod *corev1.Pod) error {
	if grace := pod.DeletionGracePeriodSeconds; grace != nil && *grace == 0 {
		return nil
	}
	opts := *metav1.NewDeleteOptions(0)
	opts.Preconditions = metav1.NewUIDPreconditions(string(pod.UID))
	err := client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, opts)
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil
	}
	return err
}
